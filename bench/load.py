"""Serving under load: do ingestion and health checks stay fast while clients flood
completions? (the Hardening issue's load test)

Starts ``lifelong serve --no-learner`` with the tiny ``builtin:micro`` base model and a
completion queue of ``--queue`` slots, then for ``--seconds`` runs ``--clients`` threads
that send completions back to back (never honouring Retry-After: a flood), one client
that submits a batch of 100 new examples every 0.2 s, and one that calls ``/healthz``
every 0.1 s. Reports latency percentiles per kind, the completions' status codes, and
whether every refused completion carried Retry-After.

    python bench/load.py                        # 30 s, 8 flooding clients, queue of 4
    python bench/load.py --seconds 10 --json /tmp/load.json   # quick (the e2e test)

Targets: ``POST /v1/tasks`` p99 < 1 s and ``/healthz`` p99 < 0.2 s; no 5xx other than a
503 with Retry-After, no hang. Results go to bench/results/load.{json,md} unless --json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import machine
from ingest import RESULTS_DIR, _base_model, make_bodies, running_server

COMPLETION = {"model": "base", "prompt": ["copy abcdefgh ="] * 4, "max_tokens": 24,
              "temperature": 0}  # fmt: skip
TIMEOUT_S = 60.0  # a request slower than this counts as a hang


class Recorder:
    """Latencies and status codes per request kind, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, Counter[str]] = {}
        self.missing_retry_after = 0

    def add(self, kind: str, seconds: float, status: str, retry_after: bool = True) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            self.statuses.setdefault(kind, Counter())[status] += 1
            if status in ("429", "503") and not retry_after:
                self.missing_retry_after += 1


def _timed(http: httpx.Client, rec: Recorder, kind: str, method: str, path: str,
           **kwargs: Any) -> None:  # fmt: skip
    t0 = time.perf_counter()
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TimeoutException:
        rec.add(kind, time.perf_counter() - t0, "timeout")
        return
    except httpx.HTTPError as exc:
        rec.add(kind, time.perf_counter() - t0, type(exc).__name__)
        return
    retry = "retry-after" in response.headers
    rec.add(kind, time.perf_counter() - t0, str(response.status_code), retry)


def _loop(stop: threading.Event, url: str, key: str, rec: Recorder, kind: str,
          pause: float, request: Any) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as http:
        while not stop.is_set():
            request(http, rec)
            stop.wait(pause)


def _completion(http: httpx.Client, rec: Recorder) -> None:
    _timed(http, rec, "completions", "POST", "/v1/completions", json=COMPLETION)


def _run_loops(loops: list[tuple[str, float, Any]], url: str, key: str, seconds: float) -> Recorder:
    rec, stop = Recorder(), threading.Event()
    threads = [
        threading.Thread(target=_loop, args=(stop, url, key, rec, kind, pause, fn), daemon=True)
        for kind, pause, fn in loops
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT_S + 5)
    return rec


def _flood(url: str, key: str, seconds: float, clients: int, out: Any) -> None:
    """The flooding clients, in a process of their own: their HTTP work under the GIL must
    not delay the measuring clients' threads (that would be the client's latency)."""
    rec = _run_loops([("completions", 0.0, _completion)] * clients, url, key, seconds)
    out.put((rec.latencies, {k: dict(v) for k, v in rec.statuses.items()},
             rec.missing_retry_after))  # fmt: skip


def run_load(url: str, key: str, seconds: float, clients: int) -> Recorder:
    """Flood for ``seconds``; returns what every request saw."""
    bodies = iter(make_bodies(int(seconds / 0.2) + 10, 100, tag=f"load-{time.time_ns()}"))

    def ingestion(http: httpx.Client, r: Recorder) -> None:
        body = next(bodies)
        headers = {"Content-Type": "application/json"}
        _timed(http, r, "tasks", "POST", "/v1/tasks", content=body, headers=headers)

    def health(http: httpx.Client, r: Recorder) -> None:
        _timed(http, r, "healthz", "GET", "/healthz")

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    flooder = context.Process(target=_flood, args=(url, key, seconds, clients, out))
    flooder.start()
    rec = _run_loops([("tasks", 0.2, ingestion), ("healthz", 0.1, health)], url, key, seconds)
    latencies, statuses, missing = out.get(timeout=TIMEOUT_S + 30)
    flooder.join(10)
    rec.latencies.update(latencies)
    rec.statuses.update({k: Counter(v) for k, v in statuses.items()})
    rec.missing_retry_after += missing
    return rec


def _warm_up(url: str, key: str, timeout: float = 120.0) -> None:
    """Wait until the model answers (the first request starts loading it)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            if http.post("/v1/completions", json=COMPLETION, timeout=60).status_code == 200:
                return
            time.sleep(0.5)
    raise RuntimeError("the model did not load")


def _is_error(status: str) -> bool:
    """Transport errors, timeouts, and 5xx other than 503 (which comes with Retry-After)."""
    return not status.isdigit() or (status.startswith("5") and status != "503")


def summarize(rec: Recorder) -> dict[str, Any]:
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    kinds = {}
    for kind, values in rec.latencies.items():
        kinds[kind] = {
            "requests": len(values),
            "p50_s": round(statistics.median(values), 4),
            "p99_s": round(pct(values, 0.99), 4),
            "max_s": round(max(values), 4),
            "statuses": dict(rec.statuses[kind]),
        }
    bad = {
        kind: {
            s: n for s, n in counts.items() if not s.isdigit() or (s.startswith("5") and s != "503")
        }
        for kind, counts in rec.statuses.items()
    }
    return {"kinds": kinds, "errors": {k: v for k, v in bad.items() if v},
            "refusals_without_retry_after": rec.missing_retry_after}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Serving under load",
        "",
        f"`{result['command']}` on {result['machine']['nproc']} cores "
        f"({result['machine']['cpu']}), {result['date']}: {result['clients']} clients flood "
        f"`/v1/completions` (queue of {result['queue']}) for {result['seconds']} s.",
        "",
        "| requests | count | p50 | p99 | max | statuses |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind, k in result["kinds"].items():
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(k["statuses"].items()))
        lines.append(f"| {kind} | {k['requests']} | {k['p50_s']:.3f} s | {k['p99_s']:.3f} s "
                     f"| {k['max_s']:.3f} s | {statuses} |")  # fmt: skip
    errors, unmarked = result["errors"] or "none", result["refusals_without_retry_after"]
    lines += ["", f"Errors (5xx other than 503, transport errors, timeouts): {errors}; "
              f"refusals without Retry-After: {unmarked}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--queue", type=int, default=4, help="LIFELONG_LIMITS__MAX_QUEUED_COMPLETIONS"
    )
    parser.add_argument("--json", type=Path, help="write the result here (no results/ files)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = _base_model(work / "model-cache")
        env = {"LIFELONG_LIMITS__MAX_QUEUED_COMPLETIONS": str(args.queue)}
        with running_server(work / "data", f"sqlite:///{work / 'load.db'}", model, env=env) as srv:
            _warm_up(srv.url, srv.key)
            rec = run_load(srv.url, srv.key, args.seconds, args.clients)
    result = {
        "command": "python bench/load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "seconds": args.seconds,
        "clients": args.clients,
        "queue": args.queue,
        **summarize(rec),
    }
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    else:
        (RESULTS_DIR / "load.json").write_text(json.dumps(result, indent=2))
        (RESULTS_DIR / "load.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
