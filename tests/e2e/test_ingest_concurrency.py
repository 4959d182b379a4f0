"""Concurrent, overlapping submissions to a real server on SQLite and PostgreSQL.

Eight client threads post batches drawn from a shared pool for about ten seconds. New pool
items are released over time, and all threads draw from the newest ones, so the same
example is often in flight in several requests at once (and sometimes twice in one batch).
Afterwards: no request failed, every distinct example was accepted exactly once, and the
database holds exactly the distinct submitted examples.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select

from learner.store.db import make_engine
from learner.store.ingest import content_hash, split_for_hash
from learner.store.models import Bucket, Example

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

THREADS = 8
DURATION_S = 10.0
MAX_REQUESTS_PER_THREAD = 2_000  # a bound on the loop whatever the speed
MAX_BATCH = 200
WINDOW = 400  # threads draw from the newest WINDOW released items of a bucket
BUCKETS = ("conc-a", "conc-b", "conc-c")
POOL_SIZE = 3_000  # per bucket

Item = tuple[str, str, str]  # bucket, prompt, target

POOL: dict[str, list[tuple[str, str]]] = {
    b: [(f"{b} #{i}: what is {i} × 3? ✓", str(3 * i)) for i in range(POOL_SIZE)] for b in BUCKETS
}


@dataclass
class Outcome:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    in_batch_repeats: int = 0
    submitted: set[Item] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def client_thread(server: LiveServer, seed: int, start: threading.Barrier, out: Outcome) -> None:
    rng = random.Random(seed)
    with server.client("submit", timeout=120.0) as http:
        start.wait()
        began = time.monotonic()
        for _ in range(MAX_REQUESTS_PER_THREAD):
            elapsed = time.monotonic() - began
            if elapsed > DURATION_S:
                break
            bucket = rng.choice(BUCKETS)
            released = min(POOL_SIZE, int(POOL_SIZE * (0.05 + elapsed / DURATION_S)))
            window = POOL[bucket][max(0, released - WINDOW) : released]
            batch = rng.choices(window, k=rng.randint(1, MAX_BATCH))  # repeats happen
            if rng.random() < 0.25:
                batch.insert(rng.randrange(len(batch) + 1), rng.choice(batch))
            out.in_batch_repeats += len(batch) - len(set(batch))
            body: dict[str, Any] = {
                "bucket": bucket,
                "examples": [{"prompt": p, "target": t} for p, t in batch],
            }
            if rng.random() < 0.5:  # the defaults, named: no conflict with unnamed ones
                body.update(kind="task", grader="exact")
            try:
                response = http.post("/v1/tasks", json=body)
            except httpx.HTTPError as exc:
                out.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            out.requests += 1
            if response.status_code != 202:
                out.errors.append(f"{response.status_code}: {response.text[:500]}")
                continue
            result = response.json()
            if (
                result["bucket"] != bucket
                or result["accepted"] + result["duplicates"] != len(batch)
                or result["accepted"] > len(set(batch))
            ):
                out.errors.append(f"inconsistent answer {result} to {len(batch)} examples")
            out.accepted += result["accepted"]
            out.duplicates += result["duplicates"]
            out.submitted.update((bucket, p, t) for p, t in batch)


def stored_examples(database_url: str) -> list[tuple[str, str, str, str, str]]:
    engine = make_engine(database_url)
    query = select(
        Bucket.name, Example.prompt, Example.target, Example.split, Example.content_hash
    ).join(Bucket, Bucket.id == Example.bucket_id)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]
    finally:
        engine.dispose()


def test_concurrent_overlapping_batches(live_server: LiveServer) -> None:
    outcomes = [Outcome() for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    threads = [
        threading.Thread(target=client_thread, args=(live_server, seed, start, out), daemon=True)
        for seed, out in enumerate(outcomes)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION_S + 180)
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    errors = [e for out in outcomes for e in out.errors]
    assert errors == [], f"{len(errors)} failed requests, first ones: {errors[:5]}"
    assert live_server.proc.poll() is None, "the server died"

    requests = sum(out.requests for out in outcomes)
    accepted = sum(out.accepted for out in outcomes)
    duplicates = sum(out.duplicates for out in outcomes)
    submitted: set[Item] = set().union(*(out.submitted for out in outcomes))
    # The run really was concurrent and overlapping.
    assert requests >= 4 * THREADS, f"only {requests} requests in {DURATION_S} s"
    assert duplicates > accepted, (accepted, duplicates)
    assert sum(out.in_batch_repeats for out in outcomes) > 0

    assert accepted == len(submitted)
    rows = stored_examples(live_server.database_url)
    stored = {(bucket, prompt, target) for bucket, prompt, target, _, _ in rows}
    assert len(rows) == len(stored), "an example is stored twice"
    assert stored == submitted
    for bucket, prompt, target, split, digest in rows:
        assert digest == content_hash(bucket, prompt, target)
        assert split == split_for_hash(digest)

    with live_server.client("read") as http:
        listed = {b["name"]: b for b in http.get("/v1/buckets").json()}
    assert set(listed) == {b for b, _, _ in submitted}
    for name, summary in listed.items():
        expected = sum(1 for b, _, _ in submitted if b == name)
        assert summary["train_examples"] + summary["probe_examples"] == expected
