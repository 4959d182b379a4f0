"""Hostile traffic does not stall the API: made-up keys and huge unauthenticated bodies.

40 clients hammer ``GET /v1/buckets`` with keys that do not exist and 10 send 60 MB bodies
without a key, all at once, against a real server; meanwhile a valid client submits a
batch of examples. The valid ingestion must not wait behind the strangers (under 1 s, one
slow batch in five allowed under 2.5 s), and
no request of any kind gets a 5xx: strangers get 401 (or 429 once their address has failed
too often), before any database connection is taken or any body is read.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from conftest import LiveServer, ServerStarter

pytestmark = pytest.mark.slow
BAD_KEY_CLIENTS = 40
BIG_BODY_CLIENTS = 10
BIG_BODY_BYTES = 60 * 1024 * 1024
ROUNDS = 5  # requests per hostile client


@pytest.fixture
def abused_server(start_server: ServerStarter, db_url: str) -> LiveServer:
    # The default throttle (20 failures per 10 s) stays on: 429 is a valid answer here.
    return start_server(db_url, env={"LIFELONG_ALIGNMENT_SUITE": "false"})


def _big_body() -> Iterator[bytes]:
    """60 MB, streamed in 1 MiB chunks, so the client side holds little of it."""
    chunk = b"x" * (1024 * 1024)
    sent = 0
    while sent < BIG_BODY_BYTES:
        yield chunk
        sent += len(chunk)


def _hostile(server: LiveServer, kind: str, index: int, statuses: Counter[str]) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        for round_ in range(ROUNDS):
            try:
                if kind == "bad-key":
                    headers = {"Authorization": f"Bearer not-a-key-{index}-{round_}"}
                    status = http.get("/v1/buckets", headers=headers).status_code
                else:
                    status = http.post(
                        "/v1/tasks",
                        content=_big_body(),
                        headers={"Content-Type": "application/json"},
                    ).status_code
                statuses[f"{kind} {status}"] += 1
            except httpx.TransportError as exc:
                # The server may close the connection after answering 401 to a body it
                # did not read; that is a refusal, not a failure.
                statuses[f"{kind} closed ({type(exc).__name__})"] += 1


def _valid_ingestion(server: LiveServer, n: int, tag: str) -> list[float]:
    """Submit ``n`` batches of new examples one after another; seconds each took."""
    seconds = []
    with server.client("submit", timeout=30.0) as http:
        for batch in range(n):
            examples = [{"prompt": f"{tag}-{batch}-{i} =", "target": f" {i}"} for i in range(50)]
            started = time.monotonic()
            response = http.post("/v1/tasks", json={"bucket": "valid", "examples": examples})
            seconds.append(time.monotonic() - started)
            assert response.status_code == 202, response.text
    return seconds


def test_strangers_do_not_delay_a_valid_ingestion(abused_server: LiveServer) -> None:
    baseline = _valid_ingestion(abused_server, 2, "before")
    statuses: Counter[str] = Counter()
    threads = [
        threading.Thread(target=_hostile, args=(abused_server, kind, i, statuses))
        for kind, count in (("bad-key", BAD_KEY_CLIENTS), ("big-body", BIG_BODY_CLIENTS))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # let the flood build up
    under_attack = _valid_ingestion(abused_server, 5, "during")
    for thread in threads:
        thread.join(120)
    print(f"baseline {baseline}, under attack {under_attack}, statuses {dict(statuses)}")
    # Four of five under 1 s, none over 2.5 s: a request queued behind the strangers would
    # wait for hundreds of 401s and 3 GB of refused bodies (many seconds), while one slow
    # batch in five is what a 2-core CI machine running other servers beside it gives
    # (seen: 1.29 s once in CI, the rest 0.12-0.70 s).
    assert sorted(under_attack)[-2] < 1.0, (under_attack, dict(statuses))
    assert max(under_attack) < 2.5, (under_attack, dict(statuses))
    five_xx = {k: v for k, v in statuses.items() if k.split()[1].startswith("5")}
    assert not five_xx, dict(statuses)
    allowed = {"401", "429"}
    unexpected = {
        k: v for k, v in statuses.items() if k.split()[1] not in allowed and "closed" not in k
    }
    assert not unexpected, dict(statuses)
    assert sum(v for k, v in statuses.items() if k.startswith("bad-key")) == (
        BAD_KEY_CLIENTS * ROUNDS
    )
    with abused_server.client("read") as http:
        buckets = http.get("/v1/buckets").json()
    valid = next(b for b in buckets if b["name"] == "valid")
    # every valid batch stored, nothing else
    assert valid["train_examples"] + valid["probe_examples"] == 50 * 7, valid
