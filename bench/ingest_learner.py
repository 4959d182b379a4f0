"""``bench/ingest.py --with-learner``: ingestion while the learner trains, on the same cores.

The service runs with its learner on the shipped ``sturdy`` base; a learnable bucket is
submitted first and the learner trains on it. Then, per backend:

1. the learner's training speed alone for ``--learner-window`` seconds;
2. the ingestion load (``--batches`` batches of ``--batch-size`` from ``--clients``
   connections) while the learner trains, with the learner's speed sampled meanwhile;
3. the learner alone again (the baseline is the mean of 1 and 3, so that drift between
   them shows as a difference, not as a slowdown).

The learner's speed is the tokens it trained per second of wall time in each phase (from
``GET /v1/learner``'s ``tokens_seen``, each status dated by its heartbeat; candidates are
off so that no judging falls into one phase only). The
teacher is ``uniform`` (it never rests, so the learner trains throughout) and the
difficulty scorer is off (``LIFELONG_DIFFICULTY__ENABLED=false``): it scores every new
example with the ensemble in the learner's process, a cost that follows the amount of new
data, not the rate it arrives at, and that would otherwise be most of what the learner does
after 100,000 new examples. Targets: >= 10,000 examples/s, p99 per batch < 1 s, the learner
at most 10% slower.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from ingest import (
    REPO_ROOT,
    TARGET_EXAMPLES_PER_S,
    LoadResult,
    Server,
    database,
    make_bodies,
    percentile,
    running_server,
    send_all,
)

from learner.builtin.families import demo_stream

STURDY = REPO_ROOT / "learner" / "builtin" / "weights" / "sturdy" / "final"
SETTLE_S = 6.0  # a heartbeat (a third of the 15 s lease) carries the newest status
MAX_SLOWDOWN = 0.10


def _status(http: httpx.Client) -> dict[str, Any]:
    status: dict[str, Any] = http.get("/v1/learner").json()["status"]
    return status


def wait_training(server: Server, min_step: int = 20, timeout: float = 900.0) -> None:
    """Submit a learnable bucket and wait until the learner has trained ``min_step`` steps."""
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        stream = demo_stream(seed=0, batch_size=64, new_bucket_every=1)
        for _ in range(8):
            batch = next(stream)
            body = {"bucket": f"learn-{batch.bucket}", "examples": batch.examples}
            http.post("/v1/tasks", json=body).raise_for_status()
        deadline = time.monotonic() + timeout
        while _status(http).get("step", 0) < min_step:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError(f"the learner did not train:\n{server.log_tail()}")
            time.sleep(2)


def _progress(http: httpx.Client) -> tuple[float, int]:
    """(when the learner wrote it, tokens seen) from its newest status."""
    body = http.get("/v1/learner").json()
    moment = time.monotonic() - float(body.get("heartbeat_age_seconds") or 0.0)
    return moment, int(body["status"].get("tokens_seen", 0))


def learner_speed(server: Server, done: threading.Event | None, seconds: float) -> float:
    """The learner's trained tokens per second of wall time over ``seconds`` (or until
    ``done``): tokens seen between its first and last status, over the time between
    them (each status is dated by its heartbeat's age). Everything the learner does
    meanwhile counts: reading new examples, round-end evaluations, waiting for the
    database."""
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        t0, tokens0 = _progress(http)
        start = time.monotonic()
        while time.monotonic() - start < seconds and not (done and done.is_set()):
            time.sleep(1.0)
        time.sleep(SETTLE_S)  # the next heartbeat carries the phase's last steps
        t1, tokens1 = _progress(http)
    return (tokens1 - tokens0) / max(t1 - t0, 1e-9)


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    # uniform: the teacher never rests on mastered or stalled buckets, so the learner
    # trains throughout every phase.
    # No candidates: their judging would stop training for a while in one phase only.
    env = {"LIFELONG_DIFFICULTY__ENABLED": "false", "LIFELONG_TEACHER__POLICY": "uniform",
           "LIFELONG_LEARNER__CANDIDATE_EVERY": "1000000"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"lifelong-bench-busy-{backend}-") as tmp:
        work = Path(tmp)
        with (
            database(backend, work, args.postgres_url) as url,
            running_server(
                work / "data", url, str(STURDY), timeout=600, env=env, learner=True
            ) as server,  # fmt: skip
        ):
            wait_training(server)
            before = learner_speed(server, None, args.learner_window)
            bodies = make_bodies(args.batches, args.batch_size, tag=f"busy-{backend}")
            done, load = threading.Event(), []

            def ingest() -> None:
                load.append(send_all(server, bodies, args.clients))
                done.set()

            sender = threading.Thread(target=ingest)
            sender.start()
            during = learner_speed(server, done, float("inf"))
            sender.join()
            after = learner_speed(server, None, args.learner_window)
    return _row(backend, load[0], before, during, after, args)


def _row(backend: str, load: LoadResult, before: float, during: float, after: float,
         args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    if load.errors:
        raise RuntimeError(f"{backend}: {len(load.errors)} failed requests: {load.errors[:3]}")
    examples = args.batches * args.batch_size
    baseline = (before + after) / 2
    return {
        "backend": backend,
        "examples": examples,
        "examples_per_s": round(examples / load.wall_s, 1),
        "wall_s": round(load.wall_s, 2),
        "latency_ms": {
            q: round(1000 * percentile(load.latencies_s, p), 1)
            for q, p in (("p50", 50), ("p99", 99))
        }
        | {"max": round(1000 * max(load.latencies_s), 1)},
        "learner_tokens_per_s": {
            "before": round(before, 1),
            "during": round(during, 1),
            "after": round(after, 1),
        },
        "learner_slowdown": round(1 - during / baseline, 3),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Ingestion while the learner trains",
        "",
        f"`{report['command']}`, {report['date']}, {m['nproc']} cores ({m['cpu']}). "
        f"{report['batches']} batches of {report['batch_size']} unique examples from "
        f"{report['clients']} connections into `lifelong serve` whose learner trains "
        f"(`sturdy` base, uniform teacher, no candidates, difficulty scorer off); the "
        f"tokens the learner trained per second of wall time before, during and after the "
        f"load (from its status, dated by its heartbeat). "
        f"Targets: >= "
        f"{TARGET_EXAMPLES_PER_S:,} examples/s, p99 < 1 s, the learner at most "
        f"{MAX_SLOWDOWN:.0%} slower.",
        "",
        "| backend | examples/s | p50 ms | p99 ms | max ms | learner tok/s before / during "
        "/ after | learner slowdown | targets met |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in report["results"]:
        lat, tok = r["latency_ms"], r["learner_tokens_per_s"]
        met = (r["examples_per_s"] >= TARGET_EXAMPLES_PER_S and lat["p99"] < 1000
               and r["learner_slowdown"] <= MAX_SLOWDOWN)  # fmt: skip
        lines.append(
            f"| {r['backend']} | {r['examples_per_s']:,.0f} | {lat['p50']} | {lat['p99']} | "
            f"{lat['max']} | {tok['before']} / {tok['during']} / {tok['after']} | "
            f"{r['learner_slowdown']:.1%} | {'yes' if met else 'no'} |"
        )
    return "\n".join(lines) + "\n"
