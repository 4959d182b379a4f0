"""``bench/ingest.py --with-learner``: ingestion while the learner trains, on the same cores.

The service runs with its learner on the shipped ``sturdy`` base; a learnable bucket is
submitted first and the learner trains on it. Then, per backend:

1. the learner's training speed alone for ``--learner-window`` seconds;
2. the ingestion load (``--batches`` batches of ``--batch-size`` from ``--clients``
   connections) while the learner trains, with the learner's speed sampled meanwhile;
3. the learner alone again (the baseline is the mean of 1 and 3, so that drift between
   them shows as a difference, not as a slowdown).

The learner's speed is its training steps' tokens/s (``GET /v1/learner``'s
``tokens_per_second``, an average over its last ten or so steps), the median of the samples
of each phase after its first ``SETTLE_S`` seconds; judging and waiting are not in it. The
teacher is ``uniform`` (it never rests, so the learner trains throughout) and the
difficulty scorer is off (``LIFELONG_DIFFICULTY__ENABLED=false``): it scores every new
example with the ensemble in the learner's process, a cost that follows the amount of new
data, not the rate it arrives at, and that would otherwise be most of what the learner does
after 100,000 new examples. Targets: >= 10,000 examples/s, p99 per batch < 1 s, the learner
at most 10% slower.
"""

from __future__ import annotations

import argparse
import statistics
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
SETTLE_S = 10.0  # the speed average needs about ten steps to follow a change
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


def learner_speed(server: Server, done: threading.Event | None, seconds: float) -> float:
    """Median training tokens/s over ``seconds`` (or until ``done``), after settling;
    fails if the learner took no step meanwhile (a resting learner has no speed)."""
    headers = {"Authorization": f"Bearer {server.key}"}
    samples: list[float] = []
    start = time.monotonic()
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        first_step = _status(http).get("step", 0)
        while (elapsed := time.monotonic() - start) < seconds and not (done and done.is_set()):
            speed = float(_status(http).get("tokens_per_second") or 0.0)
            if elapsed >= SETTLE_S and speed > 0:
                samples.append(speed)
            time.sleep(1.0)
        steps = _status(http).get("step", 0) - first_step
    if steps < 5 or not samples:
        raise RuntimeError(f"the learner took {steps} steps in {elapsed:.0f} s: not training")
    return statistics.median(samples)


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    # uniform: the teacher never rests on mastered or stalled buckets, so the learner
    # trains throughout every phase.
    env = {"LIFELONG_DIFFICULTY__ENABLED": "false", "LIFELONG_TEACHER__POLICY": "uniform"}
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
        f"(`sturdy` base, uniform teacher, difficulty scorer off); the learner's training "
        f"tokens/s before, during and after the load (median of its status, once a second). "
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
