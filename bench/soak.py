"""Soak: what an hour of steady mixed traffic does to memory, disk, tables and latency
(the operations issue; DESIGN sections 12 and 13).

Starts a real ``lifelong serve`` with its learner (SQLite by default, ``--backend postgresql``
for a fresh database beside ``--postgres-url``'s) and for ``--minutes`` keeps up:

- ingestion at a fixed rate: a batch of ``--batch-size`` examples every ``--batch-every``
  seconds from the demo stream (learnable buckets arriving one by one) and a noise bucket
  (random targets), with a resubmitted batch (duplicates) and a malformed one (a 422) now
  and then;
- ``--clients`` clients asking the served model (``lifelong``) for greedy completions;
- a reader going round every GET route;
- the admin rolling back the active version every ``--rollback-every`` seconds.

Every ``--sample-every`` seconds it records the RSS, open file descriptors and threads of
the server and of the learner process, the database's size and rows per table, the data
dir's size (adapters, checkpoints, the rest), and per route the requests' p50/p99 latency
and status codes since the last sample. After ``--warmup`` minutes each series' growth per
hour is fitted (least squares) and given relative to its mean.

    python bench/soak.py                                # 60 minutes, SQLite, sturdy base
    python bench/soak.py --backend postgresql --minutes 15   # a fresh database, dropped after
    python bench/soak.py --quick --out /tmp/soak        # 1 minute, micro base (the test)

Retention is set tighter than the defaults (``--decision-rows``) so that an hour shows
the caps at work. Results: bench/results/soak.{json,md,png} (``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from common import fresh_database_url, machine
from ingest import DEFAULT_PG_URL, REPO_ROOT, RESULTS_DIR, Server, _base_model, running_server
from soak_report import fit_growth, markdown, plot

from learner.builtin.families import demo_stream
from learner.store.db import make_engine
from learner.store.stats import database_bytes, examples_per_bucket, table_rows

STURDY = REPO_ROOT / "learner" / "builtin" / "weights" / "sturdy" / "final"
READ_ROUTES = ("/healthz", "/readyz", "/v1/buckets", "/v1/teacher", "/v1/adapters",
               "/v1/adapters/active", "/v1/adapters/history", "/v1/evaluations",
               "/v1/learner", "/v1/models", "/metrics")  # fmt: skip
NOISE_BUCKET = "soak-noise"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SoakConfig:
    """One soak run's length, load and retention."""

    minutes: float = 60.0
    warmup_minutes: float = 10.0
    sample_every: float = 60.0
    batch_size: int = 32
    batch_every: float = 4.0
    clients: int = 2
    completion_pause: float = 1.0
    rollback_every: float = 600.0
    decision_rows: int = 100
    candidate_every: int = 100
    seed: int = 0


class Window:
    """Latencies and statuses per route since the last :meth:`drain`, from many threads;
    totals since the start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[str, Counter[str]] = {}
        self.total: dict[str, Counter[str]] = {}
        self.accepted = 0

    def add(self, route: str, seconds: float, status: str) -> None:
        with self.lock:
            self.latencies.setdefault(route, []).append(seconds)
            self.statuses.setdefault(route, Counter())[status] += 1
            self.total.setdefault(route, Counter())[status] += 1

    def drain(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            latencies, statuses = self.latencies, self.statuses
            self.latencies, self.statuses = {}, {}
        return {
            route: {
                "n": len(values),
                "p50_s": round(float(np.percentile(values, 50)), 4),
                "p99_s": round(float(np.percentile(values, 99)), 4),
                "statuses": dict(statuses[route]),
            }
            for route, values in latencies.items()
        }


def _request(http: httpx.Client, window: Window, route: str, method: str, path: str,
             **kwargs: Any) -> httpx.Response | None:  # fmt: skip
    t0 = time.perf_counter()
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        window.add(route, time.perf_counter() - t0, type(exc).__name__)
        return None
    window.add(route, time.perf_counter() - t0, str(response.status_code))
    return response


class Traffic:
    """The clients: ingestion, completions, reads and rollbacks, each a thread."""

    def __init__(self, server: Server, config: SoakConfig, window: Window) -> None:
        self.server, self.config, self.window = server, config, window
        self.stop = threading.Event()
        self.rng = random.Random(config.seed)
        self.prompts: list[str] = ["copy abcd ="]
        self.buckets: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(fn,), daemon=True)
                        for fn in self._loops()]  # fmt: skip

    def _loops(self) -> list[Callable[[httpx.Client], None]]:
        return [self._ingest, self._read, self._rollback] + [self._complete] * self.config.clients

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(TIMEOUT_S + 5)

    def _run(self, loop: Callable[[httpx.Client], None]) -> None:
        headers = {"Authorization": f"Bearer {self.server.key}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=TIMEOUT_S) as http:
            loop(http)

    def _ingest(self, http: httpx.Client) -> None:
        stream = demo_stream(seed=self.config.seed, batch_size=self.config.batch_size)
        noise = np.random.default_rng(self.config.seed)
        previous: dict[str, Any] | None = None
        for n in range(1 << 62):
            if self.stop.wait(self.config.batch_every):
                return
            if previous is not None and n % 10 == 5:
                body = previous  # a client retrying: every example a duplicate
            elif n % 20 == 13:  # malformed: an example without a target (a 422)
                body = {"bucket": "soak-bad", "examples": [{"prompt": "x"}]}
            elif n % 4 == 3:
                body = {"bucket": NOISE_BUCKET, "examples": [
                    {"prompt": f"noise {n} {i} =", "target": str(noise.integers(0, 10**6))}
                    for i in range(self.config.batch_size)]}  # fmt: skip
            else:
                batch = next(stream)
                body = {"bucket": f"soak-{batch.bucket}", "examples": batch.examples}
            response = _request(http, self.window, "POST /v1/tasks", "POST", "/v1/tasks",
                                json=body)  # fmt: skip
            if response is not None and response.status_code == 202:
                previous = body
                self.window.accepted += response.json()["accepted"]
                self.prompts = [e["prompt"] for e in body["examples"][:4]]
                if body["bucket"] not in self.buckets:
                    self.buckets.append(body["bucket"])

    def _complete(self, http: httpx.Client) -> None:
        while not self.stop.wait(self.config.completion_pause):
            prompt = self.rng.choice(self.prompts)
            body = {"model": "lifelong", "prompt": prompt, "max_tokens": 16, "temperature": 0}
            _request(http, self.window, "POST /v1/completions", "POST", "/v1/completions",
                     json=body)  # fmt: skip

    def _read(self, http: httpx.Client) -> None:
        routes = list(READ_ROUTES)
        for n in range(1 << 62):
            if self.stop.wait(0.5):
                return
            if self.buckets and n % len(routes) == 0:
                name = self.rng.choice(self.buckets)
                _request(http, self.window, "GET /v1/buckets/{name}/examples", "GET",
                         f"/v1/buckets/{name}/examples", params={"limit": 5})  # fmt: skip
            path = routes[n % len(routes)]
            _request(http, self.window, f"GET {path}", "GET", path)

    def _rollback(self, http: httpx.Client) -> None:
        while not self.stop.wait(self.config.rollback_every):
            # 409 when there is nothing to roll back to (the base model is active).
            _request(http, self.window, "POST /v1/adapters/rollback", "POST",
                     "/v1/adapters/rollback", json={"reason": "soak"})  # fmt: skip


def _learner_process(server: psutil.Process) -> psutil.Process | None:
    for child in server.children(recursive=True):
        try:
            if "learner" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def _process_sample(proc: psutil.Process | None) -> dict[str, float | None]:
    if proc is None:
        return {"rss_mb": None, "fds": None, "threads": None}
    try:
        with proc.oneshot():
            return {"rss_mb": round(proc.memory_info().rss / 2**20, 1),
                    "fds": proc.num_fds(), "threads": proc.num_threads()}  # fmt: skip
    except psutil.Error:
        return {"rss_mb": None, "fds": None, "threads": None}


def _dir_mb(path: Path) -> float:
    total = 0
    for file in path.rglob("*"):
        try:
            total += file.stat().st_size if file.is_file() else 0
        except OSError:  # removed while listed (a pruned candidate)
            continue
    return round(total / 2**20, 2)


def sample(
    server: Server, engine: Any, data_dir: Path, window: Window, t0: float
) -> dict[str, Any]:
    """One row of every series."""
    proc = psutil.Process(server.proc.pid)
    with engine.connect() as conn:
        db_mb, rows = database_bytes(conn) / 2**20, table_rows(conn)
    return {
        "minute": round((time.monotonic() - t0) / 60, 2),
        "server": _process_sample(proc),
        "learner": _process_sample(_learner_process(proc)),
        "db_mb": round(db_mb, 2),
        "rows": rows,
        "disk_mb": {
            "adapters": _dir_mb(data_dir / "adapters"),
            "checkpoints": _dir_mb(data_dir / "learner" / "checkpoints"),
            "data_dir": _dir_mb(data_dir),
        },
        "routes": window.drain(),
    }


def run(config: SoakConfig, base_model: str, database_url: str, work: Path) -> dict[str, Any]:
    """The soak itself: the service, the traffic, a sample every ``sample_every`` s."""
    data_dir = work / "data"
    env = {
        "LIFELONG_RETENTION__DECISION_ROWS": str(config.decision_rows),
        "LIFELONG_LEARNER__CANDIDATE_EVERY": str(config.candidate_every),
        "LIFELONG_LEARNER__SEED": str(config.seed),
        # Pruning passes as often as the samples, busy or idle, so that the caps show.
        "LIFELONG_RETENTION__BUSY_INTERVAL_SECONDS": str(config.sample_every),
        "LIFELONG_RETENTION__INTERVAL_SECONDS": str(min(60.0, config.sample_every)),
    }
    window, samples = Window(), []
    engine = make_engine(database_url)
    with running_server(data_dir, database_url, base_model, env=env, learner=True,
                        scope="admin", timeout=600) as server:  # fmt: skip
        traffic = Traffic(server, config, window)
        t0 = time.monotonic()
        traffic.start()
        try:
            while (elapsed := time.monotonic() - t0) < config.minutes * 60:
                time.sleep(min(config.sample_every, config.minutes * 60 - elapsed))
                samples.append(sample(server, engine, data_dir, window, t0))
                print(_progress(samples[-1]), flush=True)
        finally:
            traffic.close()
        with engine.connect() as conn:
            submitted = set(traffic.buckets)
            stored = sum(n for name, n in examples_per_bucket(conn) if name in submitted)
    engine.dispose()
    return {"samples": samples, "totals": {r: dict(c) for r, c in window.total.items()},
            "accepted": window.accepted, "stored": stored}  # fmt: skip


def _progress(row: dict[str, Any]) -> str:
    s, learner = row["server"], row["learner"]
    return (f"{row['minute']:6.1f} min  server {s['rss_mb']} MB  learner {learner['rss_mb']} MB  "
            f"db {row['db_mb']} MB  decisions {row['rows'].get('teacher_decisions')}  "
            f"data dir {row['disk_mb']['data_dir']} MB")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="minutes before fitting")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--rollback-every", type=float, default=600.0, help="seconds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-every", type=float, default=4.0, help="seconds")
    parser.add_argument("--clients", type=int, default=2, help="completion clients")
    parser.add_argument("--decision-rows", type=int, default=100,
                        help="LIFELONG_RETENTION__DECISION_ROWS for the run")  # fmt: skip
    parser.add_argument("--base-model", default=None, help="default: the shipped sturdy model")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_PG_URL,
        help="admin URL of the PostgreSQL server for --backend postgresql",
    )
    parser.add_argument("--quick", action="store_true",
                        help="1 minute, micro base, a sample every 5 s (the test)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report", type=Path, default=None,
                        help="only rewrite the report and plot of this soak.json")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.warmup, args.sample_every, args.rollback_every = 1.0, 0.25, 5.0, 20.0
        args.decision_rows = 2  # small enough for the cap to show within a minute
    return args


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "soak.md").write_text(markdown(report))
    plot(report, out / "soak.png")
    print(markdown(report))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:  # the fits and the report again, from the samples
        report = json.loads(args.report.read_text())
        report["growth"] = fit_growth(report["samples"], report["config"]["warmup_minutes"])
        write_report(report, args.out)
        return 0
    config = SoakConfig(
        minutes=args.minutes, warmup_minutes=args.warmup, sample_every=args.sample_every,
        batch_size=args.batch_size, batch_every=args.batch_every, clients=args.clients,
        rollback_every=args.rollback_every, decision_rows=args.decision_rows,
        candidate_every=20 if args.quick else 100,
    )  # fmt: skip
    command = shlex.join(["python", "bench/soak.py", *(sys.argv[1:] if argv is None else argv)])
    started = machine()
    with tempfile.TemporaryDirectory(prefix="lifelong-soak-") as tmp:
        work = Path(tmp)
        base = args.base_model or (_base_model(work / "model") if args.quick else str(STURDY))
        backend = args.backend
        with fresh_database_url(backend, work, args.postgres_url) as url:
            result = run(config, base, url, work)
    report = {
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": started, "backend": backend, "base_model": base, "config": asdict(config),
        **result, "growth": fit_growth(result["samples"], config.warmup_minutes),
    }  # fmt: skip
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
