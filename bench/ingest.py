"""HTTP ingestion throughput of ``POST /v1/tasks`` against a real server (DESIGN section 12).

Starts ``lifelong serve --no-learner`` (uvicorn, as deployed) in a subprocess for each
backend, sends batches of unique examples from a few concurrent keep-alive connections and
reports examples/s and request latencies. Target: >= 10,000 examples/s in batches of 1,000
on a 2-core machine.

    python bench/ingest.py                          # SQLite, 100 batches of 1,000
    python bench/ingest.py --backend both           # and PostgreSQL (a fresh database)
    python bench/ingest.py --batches 50 --clients 2
    python bench/ingest.py --backend both --with-learner --batches 600   # the learner trains

The request bodies are JSON-encoded before the clock starts, so the client side costs
little beyond the HTTP exchange. The server is given a tiny prebuilt base model
(``builtin:micro``) so that it does not spend the run bootstrapping the default one in the
background. Results go to bench/results/ingest.json and bench/results/ingest.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import fresh_database_url, machine

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_PG_URL = os.environ.get(
    "LIFELONG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TARGET_EXAMPLES_PER_S = 10_000
BUCKET = "bench"


# --------------------------------------------------------------------------- server


@dataclasses.dataclass
class Server:
    url: str
    key: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        text_ = self.log_path.read_text(errors="replace")
        return text_[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_model(cache_dir: Path) -> str:
    """A tiny trained base model for the server (about a second to build, once)."""
    from learner.builtin.model import BuiltinConfig, ensure_builtin_model

    config = dataclasses.replace(BuiltinConfig.preset("micro"), num_threads=1)
    return str(ensure_builtin_model(cache_dir, config, progress=False))


@contextmanager
def running_server(
    data_dir: Path,
    database_url: str,
    base_model: str,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
    learner: bool = False,
    scope: str = "submit",
) -> Iterator[Server]:
    """``lifelong serve`` in a subprocess (``learner``: with its learner; the key's
    ``scope`` is submit, or admin to promote and roll back)."""
    key = "bench-" + secrets.token_hex(16)
    port = _free_port()
    argv = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1"]
    argv += [] if learner else ["--no-learner"]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    extra_env = env or {}
    env = {
        **os.environ,
        "LIFELONG_DATABASE_URL": database_url,
        "LIFELONG_API_KEYS": f"{scope}:{key}",
        "LIFELONG_BASE_MODEL": base_model,
        # Ingestion only: no model loading competing for the two cores during the run.
        "LIFELONG_PRELOAD_MODEL": str(learner).lower(),
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    log_path = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", key, proc, log_path)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log_tail()}")
            with suppress(httpx.TransportError):
                if http.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log_tail()}")


# --------------------------------------------------------------------------- databases


def database(backend: str, work_dir: Path, postgres_url: str) -> AbstractContextManager[str]:
    """A fresh, empty database for one run (the server migrates it); dropped afterwards."""
    return fresh_database_url(backend, work_dir, postgres_url)


# --------------------------------------------------------------------------- load


def make_bodies(count: int, batch_size: int, tag: str, first: int = 0) -> list[bytes]:
    """``count`` JSON bodies of ``batch_size`` examples each, all examples distinct."""
    bodies = []
    for b in range(count):
        base = (first + b) * batch_size
        examples = [
            {
                "prompt": f"[{tag}] #{i}: what is {i % 997} + {i % 991} * {i % 13}?",
                "target": str(i % 997 + (i % 991) * (i % 13)),
            }
            for i in range(base, base + batch_size)
        ]
        bodies.append(json.dumps({"bucket": BUCKET, "examples": examples}).encode())
    return bodies


@dataclasses.dataclass
class LoadResult:
    wall_s: float
    latencies_s: list[float]
    accepted: int
    errors: list[str]


def send_all(server: Server, bodies: list[bytes], clients: int) -> LoadResult:
    """POST every body once from ``clients`` threads, each on its own keep-alive connection."""
    lock = threading.Lock()
    next_index = 0
    latencies: list[float] = []
    accepted = 0
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def worker() -> None:
        nonlocal next_index, accepted
        headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120.0) as http:
            http.get("/healthz")  # open the connection before the clock starts
            start.wait()
            while True:
                with lock:
                    if next_index >= len(bodies):
                        return
                    body = bodies[next_index]
                    next_index += 1
                t0 = time.perf_counter()
                try:
                    response = http.post("/v1/tasks", content=body)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if response.status_code == 202:
                        accepted += response.json()["accepted"]
                    else:
                        errors.append(f"{response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return LoadResult(time.perf_counter() - t0, latencies, accepted, errors)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


# --------------------------------------------------------------------------- runs


def run_backend(backend: str, args: argparse.Namespace, base_model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"lifelong-bench-{backend}-") as tmp:
        work = Path(tmp)
        tag = secrets.token_hex(4)
        warmup = make_bodies(args.warmup, args.batch_size, tag)
        bodies = make_bodies(args.batches, args.batch_size, tag, first=args.warmup)
        with (
            database(backend, work, args.postgres_url) as url,
            running_server(work / "data", url, base_model) as server,
        ):
            if warmup:
                send_all(server, warmup, args.clients)
            load = send_all(server, bodies, args.clients)
            with httpx.Client(base_url=server.url, timeout=30.0) as http:
                summary = http.get(
                    f"/v1/buckets/{BUCKET}", headers={"Authorization": f"Bearer {server.key}"}
                ).json()
            stored = summary["train_examples"] + summary["probe_examples"]
    expected = args.batch_size * args.batches
    if load.errors:
        raise RuntimeError(f"{backend}: {len(load.errors)} failed requests: {load.errors[:3]}")
    if load.accepted != expected or stored != expected + args.batch_size * args.warmup:
        raise RuntimeError(f"{backend}: accepted {load.accepted} and stored {stored}")
    return {
        "backend": backend,
        "examples": expected,
        "requests": len(load.latencies_s),
        "wall_s": round(load.wall_s, 3),
        "examples_per_s": round(expected / load.wall_s, 1),
        "requests_per_s": round(len(load.latencies_s) / load.wall_s, 2),
        "latency_ms": {
            "p50": round(1000 * percentile(load.latencies_s, 50), 1),
            "p95": round(1000 * percentile(load.latencies_s, 95), 1),
            "max": round(1000 * max(load.latencies_s), 1),
            "mean": round(1000 * statistics.fmean(load.latencies_s), 1),
        },
    }


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [
        "# Ingest benchmark (`POST /v1/tasks` over HTTP)",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['platform']}, Python {m['python']}, "
        f"load average at start {m['load_avg_at_start']}",
        f"- command: `{report['command']}`",
        f"- load: {report['batches']} batches of {report['batch_size']} unique examples "
        f"from {report['clients']} concurrent keep-alive connections, after "
        f"{report['warmup_batches']} warm-up batches; bodies JSON-encoded before timing",
        f"- server: `lifelong serve --no-learner` (uvicorn), base model builtin:micro; "
        f"target >= {TARGET_EXAMPLES_PER_S:,} examples/s",
        "",
        "| backend | examples/s | requests/s | p50 ms | p95 ms | max ms | target met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        lat = r["latency_ms"]
        met = "yes" if r["examples_per_s"] >= TARGET_EXAMPLES_PER_S else "no"
        lines.append(
            f"| {r['backend']} | {r['examples_per_s']:,.0f} | {r['requests_per_s']:.1f} | "
            f"{lat['p50']:.1f} | {lat['p95']:.1f} | {lat['max']:.1f} | {met} |"
        )
    (out_dir / "ingest.md").write_text("\n".join(lines) + "\n")


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'backend':<11} {'examples/s':>11} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for r in results:
        lat = r["latency_ms"]
        print(
            f"{r['backend']:<11} {r['examples_per_s']:>11,.0f} {r['requests_per_s']:>7.1f} "
            f"{lat['p50']:>8.1f} {lat['p95']:>8.1f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--batches", type=int, default=100, help="timed batches (default 100)")
    parser.add_argument("--batch-size", type=int, default=1000, help="examples per batch")
    parser.add_argument("--clients", type=int, default=3, help="concurrent connections")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_PG_URL,
        help="admin URL of a PostgreSQL server (a fresh database is created and dropped); "
        "default LIFELONG_TEST_POSTGRES_URL or the local server",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--with-learner", action="store_true",
                        help="the server's learner trains meanwhile (bench/ingest_learner.py); "
                        "results in ingest-learner.{json,md}")  # fmt: skip
    parser.add_argument("--learner-window", type=float, default=60.0,
                        help="seconds of the learner alone before and after the load")  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.batches, args.batch_size, args.clients) < 1 or args.warmup < 0:
        parser.error("--batches, --batch-size and --clients must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    command = shlex.join(["python", "bench/ingest.py", *(sys.argv[1:] if argv is None else argv)])
    started = machine()
    if args.with_learner:
        return _with_learner(args, backends, command, started)
    with tempfile.TemporaryDirectory(prefix="lifelong-bench-model-") as model_dir:
        base_model = _base_model(Path(model_dir))
        results = []
        for backend in backends:
            print(f"{backend}: {args.batches} x {args.batch_size} examples...", flush=True)
            results.append(run_backend(backend, args, base_model))
    report = {
        **_report_header("ingest", command, started, args),
        "warmup_batches": args.warmup,
        "target_examples_per_s": TARGET_EXAMPLES_PER_S,
        "results": results,
    }
    write_reports(report, args.out)
    print_table(results)
    print(f"results: {args.out / 'ingest.json'}, {args.out / 'ingest.md'}")
    return 0


def _report_header(
    name: str, command: str, started: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """What every ingest report starts with: the run and its load."""
    return {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": started,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "clients": args.clients,
    }


def _with_learner(args: argparse.Namespace, backends: list[str], command: str,
                  started: dict[str, Any]) -> int:  # fmt: skip
    import ingest_learner  # imports this module: loaded only for this mode

    results = []
    for backend in backends:
        print(f"{backend}: {args.batches} x {args.batch_size} examples, learner training...",
              flush=True)  # fmt: skip
        results.append(ingest_learner.run_backend(backend, args))
        print(results[-1], flush=True)
    report = {**_report_header("ingest-learner", command, started, args), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest-learner.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "ingest-learner.md").write_text(ingest_learner.markdown(report))
    print(ingest_learner.markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
