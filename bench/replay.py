"""Prioritized replay store at scale: insert, rebuild, sample + update against cpprb.

For each backend: a fresh database, ``--examples`` train examples stored through
``ingest_batch`` (big transactions of 5,000-example batches), the index rebuilt from SQL
(cold: no ``replay_state`` rows yet, so the entry rows are written too; warm: a second
start), then rounds of ``sample(256)`` + ``update_priorities(256)`` timed against cpprb's
``PrioritizedReplayBuffer`` with the same alpha, beta and eps, in blocks that alternate
between the two so that both see the same machine load. Target: within 2x of cpprb.

    python bench/replay.py --backend both                  # 1,000,000 examples
    python bench/replay.py --examples 100000 --rounds 500  # while developing

Results go to bench/results/replay.json and bench/results/replay.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cpprb import PrioritizedReplayBuffer
from sqlalchemy import Engine

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common import fresh_database_url, machine  # noqa: E402

from learner.replay import ReplayStore  # noqa: E402
from learner.store.db import make_engine, upgrade, write_transaction  # noqa: E402
from learner.store.ingest import NewExample, content_hash, ingest_batch, split_for_hash  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_PG_URL = os.environ.get(
    "LIFELONG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ALPHA, BETA, EPS = 0.6, 0.4, 1e-3
TARGET_RATIO = 2.0
BLOCK_ROUNDS = 100  # rounds per block; blocks alternate between the store and cpprb


@contextmanager
def database(backend: str, work_dir: Path, postgres_url: str) -> Iterator[Engine]:
    """A fresh migrated database for one run; a PostgreSQL one is dropped afterwards."""
    with fresh_database_url(backend, work_dir, postgres_url) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()


def train_examples(bucket: str, n: int) -> list[NewExample]:
    """``n`` distinct examples that ingestion files under ``train`` (probes are skipped)."""
    out: list[NewExample] = []
    i = 0
    while len(out) < n:
        prompt, target = f"[{bucket}] #{i}: what is {i % 997} + {i % 991}?", str(i % 1988)
        if split_for_hash(content_hash(bucket, prompt, target)) == "train":
            out.append(NewExample(prompt, target))
        i += 1
    return out


def insert_examples(engine: Engine, n: int, buckets: int) -> dict[str, Any]:
    per_bucket = [n // buckets + (b < n % buckets) for b in range(buckets)]
    data = [(f"b{b}", train_examples(f"b{b}", k)) for b, k in enumerate(per_bucket)]
    start = time.perf_counter()
    for name, examples in data:
        for first in range(0, len(examples), 50_000):
            with write_transaction(engine) as conn:
                chunk = examples[first : first + 50_000]
                for k in range(0, len(chunk), 5_000):
                    ingest_batch(conn, name, chunk[k : k + 5_000])
    seconds = time.perf_counter() - start
    return {"examples": n, "seconds": round(seconds, 2), "examples_per_s": round(n / seconds)}


def timed(fn: Callable[[], ReplayStore]) -> tuple[ReplayStore, float]:
    start = time.perf_counter()
    store = fn()
    return store, time.perf_counter() - start


def percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.array(seconds) * 1e6
    return {
        "median_us": round(float(np.median(us)), 1),
        "p95_us": round(float(np.percentile(us, 95)), 1),
    }


def run_rounds(args: argparse.Namespace, store: ReplayStore) -> dict[str, Any]:
    """Alternate blocks of store rounds (with and without texts) and cpprb rounds."""
    n = len(store)
    buffer = PrioritizedReplayBuffer(n, {"id": {"dtype": np.int64}}, alpha=ALPHA, eps=EPS)
    buffer.add(id=np.arange(n))
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 1.0, size=(64, args.batch_size))
    times: dict[str, list[float]] = {k: [] for k in ("full", "ids", "cpprb", "sample", "update")}

    def store_round(k: int, record: bool, with_examples: bool) -> None:
        t0 = time.perf_counter()
        batch = store.sample(args.batch_size, beta=BETA, with_examples=with_examples)
        t1 = time.perf_counter()
        store.update_priorities(batch.ids, losses[k % 64])
        t2 = time.perf_counter()
        if record:
            times["full" if with_examples else "ids"].append(t2 - t0)
            if with_examples:
                times["sample"].append(t1 - t0)
                times["update"].append(t2 - t1)

    def cpprb_round(k: int, record: bool) -> None:
        t0 = time.perf_counter()
        sample = buffer.sample(args.batch_size, beta=BETA)
        buffer.update_priorities(sample["indexes"], losses[k % 64])
        if record:
            times["cpprb"].append(time.perf_counter() - t0)

    for k in range(args.warmup):
        store_round(k, False, True)
        store_round(k, False, False)
        cpprb_round(k, False)
    store.flush()
    flushed, flush_s = 0, 0.0
    for block in range(0, args.rounds, BLOCK_ROUNDS):
        for k in range(block, min(block + BLOCK_ROUNDS, args.rounds)):
            store_round(k, True, True)
        for k in range(block, min(block + BLOCK_ROUNDS, args.rounds)):
            store_round(k, True, False)
        start = time.perf_counter()
        flushed += store.flush()  # the write-behind's SQL work, timed on its own
        flush_s += time.perf_counter() - start
        for k in range(block, min(block + BLOCK_ROUNDS, args.rounds)):
            cpprb_round(k, True)
    result: dict[str, Any] = {key: percentiles(values) for key, values in times.items()}
    cpprb = result["cpprb"]["median_us"]
    per_round = 1e6 * flush_s / (2 * args.rounds)
    result["flush"] = {
        "rows": flushed,
        "rows_per_s": round(flushed / flush_s),
        "us_per_round": round(per_round, 1),
    }
    result["ratio_full"] = round(result["full"]["median_us"] / cpprb, 2)
    result["ratio_ids"] = round(result["ids"]["median_us"] / cpprb, 2)
    result["ratio_full_with_flush"] = round((result["full"]["median_us"] + per_round) / cpprb, 2)
    return result


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"lifelong-replay-{backend}-") as tmp,
        database(backend, Path(tmp), args.postgres_url) as engine,
    ):
        print(f"{backend}: inserting {args.examples:,} examples...", flush=True)
        insert = insert_examples(engine, args.examples, args.buckets)
        print(f"  {insert['examples_per_s']:,} examples/s", flush=True)
        # No background flushes in the timed part: they are timed on their own.
        options: dict[str, Any] = {"alpha": ALPHA, "eps": EPS}
        options.update(flush_interval=3600, max_pending=10**8)
        cold, cold_s = timed(lambda: ReplayStore(engine, **options))
        start = time.perf_counter()
        cold.flush()  # the entry rows of a million examples no store has seen yet
        backfill_s = time.perf_counter() - start
        cold.close()
        store, warm_s = timed(lambda: ReplayStore(engine, **options))
        print(
            f"  rebuild: cold {cold_s:.2f} s (+ backfill {backfill_s:.2f} s), warm {warm_s:.2f} s"
        )
        try:
            rounds = run_rounds(args, store)
        finally:
            store.close()
    return {
        "backend": backend,
        "insert": insert,
        "index_size": len(store),
        "index_bytes_per_example": round(store.index_nbytes / len(store), 1),
        "text_cache": store.text_cache_stats(),
        "rebuild_s": {
            "cold": round(cold_s, 2),
            "backfill": round(backfill_s, 2),
            "warm": round(warm_s, 2),
        },
        "rounds": rounds,
    }


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [
        "# Replay store benchmark (`ReplayStore` against cpprb `PrioritizedReplayBuffer`)",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['platform']}, Python {m['python']}, "
        f"numpy {m['numpy']}, load average at start {m['load_avg_at_start']}",
        f"- command: `{report['command']}`",
        f"- load: {report['examples']:,} train examples in {report['buckets']} buckets; "
        f"{report['rounds']} timed rounds of sample({report['batch_size']}) + "
        f"update_priorities({report['batch_size']}) after {report['warmup']} warm-up rounds, "
        f"alpha {ALPHA}, beta {BETA}, eps {EPS}; blocks of {BLOCK_ROUNDS} rounds alternate "
        "between the store and cpprb",
        "- `full`: sample with the texts (from the store's in-memory text cache, filled at "
        "rebuild; SQL only for ids it does not hold), then update; `ids`: sample without "
        "texts (`with_examples=False`), then update; `flush`: the write-behind's SQL work "
        "(run between blocks, timed apart: a tight loop makes ~500k updates/s, far beyond "
        "what SQL absorbs), amortized per round; target: within "
        f"{TARGET_RATIO:g}x of cpprb",
        "- rebuild: cold = a store over examples no store has seen (returns sampleable, "
        "then the write-behind backfills their entry rows: `backfill`); warm = the next start",
        "",
        "| backend | insert ex/s | rebuild cold (+backfill) / warm s | index B/example | "
        "text cache (examples, MiB) | "
        "full p50 / p95 us | ids p50 / p95 us | cpprb p50 / p95 us | flush us/round "
        "(rows/s) | full / cpprb | ids / cpprb | full+flush / cpprb |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        t, rb = r["rounds"], r["rebuild_s"]
        lines.append(
            f"| {r['backend']} | {r['insert']['examples_per_s']:,} | {rb['cold']} "
            f"(+{rb['backfill']}) / {rb['warm']} | {r['index_bytes_per_example']} | "
            f"{r['text_cache']['examples']:,}, {r['text_cache']['bytes'] / 2**20:.0f} | "
            f"{t['full']['median_us']} / {t['full']['p95_us']} | "
            f"{t['ids']['median_us']} / {t['ids']['p95_us']} | "
            f"{t['cpprb']['median_us']} / {t['cpprb']['p95_us']} | "
            f"{t['flush']['us_per_round']} ({t['flush']['rows_per_s']:,}) | "
            f"{t['ratio_full']} | {t['ratio_ids']} | {t['ratio_full_with_flush']} |"
        )
    (out_dir / "replay.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--examples", type=int, default=1_000_000, help="train examples")
    parser.add_argument("--buckets", type=int, default=8, help="buckets to spread them over")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2000, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=200, help="untimed rounds first")
    parser.add_argument("--postgres-url", default=DEFAULT_PG_URL, help="admin URL")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    if min(args.examples, args.buckets, args.batch_size, args.rounds) < 1 or args.warmup < 0:
        parser.error("sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    command = shlex.join(["python", "bench/replay.py", *(sys.argv[1:] if argv is None else argv)])
    started = machine(numpy=np.__version__)
    results = [run_backend(backend, args) for backend in backends]
    report = {
        "benchmark": "replay",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": started,
        "examples": args.examples,
        "buckets": args.buckets,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "target_ratio": TARGET_RATIO,
        "results": results,
    }
    write_reports(report, args.out)
    for r in results:
        t = r["rounds"]
        print(
            f"{r['backend']}: full {t['full']['median_us']} us, ids {t['ids']['median_us']} us, "
            f"cpprb {t['cpprb']['median_us']} us (median); full/cpprb {t['ratio_full']}, "
            f"ids/cpprb {t['ratio_ids']}"
        )
    print(f"results: {args.out / 'replay.json'}, {args.out / 'replay.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
