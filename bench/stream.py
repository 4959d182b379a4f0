"""The continual-learning benchmark: teacher policies on one realistic stream, through the
real learner (replay store, rounds, candidates, the gate), on the default builtin base.

A real task stream is mostly not learnable right now: much of it is already known, some is
label noise, some is beyond reach. The standard stream (``STREAM``, 14 buckets) arrives in
three phases (new buckets when a third and two thirds of the step budget are spent) and
holds, by category (measured on the base and under ``uniform``; see the results):

- ``mastered``: foundation skills the base already answers (copy-l2, reverse-l1,
  addition-l1: 0.83-1.0 on the ``sturdy`` base);
- ``noise``: random targets (``noise-random``) and targets shuffled across prompts
  (``noise-shuffled``, right format, wrong pairing);
- ``too_hard``: beyond the budget (addition-l4, sort-l4: 0.00 after 9-11 rounds);
- ``fast``: learned within a few rounds (rotate-l1 0.38 -> 0.9 in 6 rounds, counting-l1,
  comparison-l2, addition-l2);
- ``slow``: moving over many rounds (sort-l1 0.35 -> 0.54, rotate-l2, sort-l2).

The categories come from an exploratory run of ``uniform`` and ``lp_zpd`` (seed 0, 3,000
steps, 2026-12-07). The budget (1,200 steps, 8 candidates) is what 4 policies x 5 seeds
allow within an hour on 2 cores (3.4 steps/s per run, two at a time); the slow buckets do
not level off within it under ``uniform``.

Every policy gets the same data, seeds and step budget. Per run it records the *served*
model's (the active version's) accuracy on every bucket over the steps, forgetting,
alignment retention and the share of steps per category; ``stream_report`` turns the runs
into paired comparisons against ``uniform`` with bootstrap intervals.

    python bench/stream.py --quick      # uniform and lp_zpd, 1 seed, short (minutes)
    python bench/stream.py              # the 4 main policies x 5 seeds (about an hour here)
    python bench/stream.py --all        # ... and the other policies, and the ablations

Results: bench/results/stream.{md,json} and stream-*.png (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import stream_report
from common import machine

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from learner.builtin.families import make_examples  # noqa: E402
from learner.builtin.model import BuiltinConfig, ensure_builtin_model  # noqa: E402
from learner.builtin.suites import ensure_alignment_suite  # noqa: E402
from learner.config import LearnerConfig, TeacherConfig  # noqa: E402
from learner.evaluation.gate import GateConfig  # noqa: E402
from learner.evaluation.matrix import matrix_report  # noqa: E402
from learner.model import registry  # noqa: E402
from learner.replay.config import ReplayConfig  # noqa: E402
from learner.store.db import make_engine, upgrade, write_transaction  # noqa: E402
from learner.store.ingest import NewExample, ingest_batch  # noqa: E402
from learner.store.teacher import recent_decisions  # noqa: E402
from learner.worker import Learner  # noqa: E402
from teacher.policies import POLICIES  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
MAIN_POLICIES = ("uniform", "round_robin", "thompson", "lp_zpd")
CATEGORIES = ("mastered", "noise", "too_hard", "fast", "slow")
WASTE = stream_report.WASTE


@dataclass(frozen=True)
class BucketSpec:
    """One bucket of the stream: its examples' family and level, when it arrives, and its
    category. ``noise`` "random" replaces targets by random letters, "shuffled" pairs
    every prompt with another prompt's target."""

    name: str
    family: str
    level: int
    phase: int
    category: str
    noise: str = ""


# fmt: off
STREAM: tuple[BucketSpec, ...] = (
    BucketSpec("copy-l2", "copy", 2, 0, "mastered"),
    BucketSpec("reverse-l1", "reverse", 1, 0, "mastered"),
    BucketSpec("noise-random", "reverse", 2, 0, "noise", noise="random"),
    BucketSpec("addition-l4", "addition", 4, 0, "too_hard"),
    BucketSpec("rotate-l1", "rotate", 1, 0, "fast"),
    BucketSpec("sort-l1", "sort", 1, 0, "slow"),
    BucketSpec("addition-l1", "addition", 1, 1, "mastered"),
    BucketSpec("noise-shuffled", "sort", 2, 1, "noise", noise="shuffled"),
    BucketSpec("sort-l4", "sort", 4, 1, "too_hard"),
    BucketSpec("comparison-l2", "comparison", 2, 1, "fast"),
    BucketSpec("counting-l1", "counting", 1, 1, "fast"),
    BucketSpec("addition-l2", "addition", 2, 2, "fast"),
    BucketSpec("rotate-l2", "rotate", 2, 2, "slow"),
    BucketSpec("sort-l2", "sort", 2, 2, "slow"),
)
# fmt: on
PHASES = 1 + max(spec.phase for spec in STREAM)


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run's budget and learner settings (the same for every policy)."""

    model: str = "sturdy"  # builtin preset
    steps: int = 1200
    examples: int = 300  # per bucket (a tenth become probes)
    batch_size: int = 16
    round_steps: int = 20
    candidate_every: int = 150
    eval_probes: int = 32
    gate_probes: int = 32  # probes per learned bucket at each candidate
    alignment_probes: int = 60  # per alignment bucket at each candidate
    idle_seconds: float = 20.0
    alpha: float = 0.6  # replay prioritization (0: uniform)
    focus_share: float = 0.5
    gate: bool = True


@dataclass
class RunResult:
    policy: str
    seed: int
    variant: str
    steps: int
    wall_s: float
    final_accuracy: float
    curve: list[tuple[int, float]]  # (train step, served mean accuracy of the scored buckets)
    per_bucket: dict[str, list[tuple[int, float]]]  # served accuracy over steps per bucket
    backward_transfer: float | None
    forgetting: float | None
    alignment_retention: float | None
    shares: dict[str, float]  # of the training steps, per focus bucket
    category_shares: dict[str, float]  # of the training steps, per category
    example_shares: dict[str, float]  # of the trained examples (focus, replay, anchors)
    rested: bool
    verdicts: dict[str, int] = field(default_factory=dict)


# --- the stream -------------------------------------------------------------------------


def bucket_examples(spec: BucketSpec, n: int, seed: int) -> list[NewExample]:
    """The bucket's ``n`` examples for ``seed`` (the same for every policy)."""
    rows = make_examples(spec.family, n, spec.level, seed)
    targets = [e["target"] for e in rows]
    rng = random.Random(f"{seed}-{spec.name}")
    if spec.noise == "random":
        letters = "abcdefghijklmnopqrstuvwxyz"
        targets = ["".join(rng.choice(letters) for _ in t) for t in targets]
    elif spec.noise == "shuffled":  # a derangement: every prompt gets another's target
        order = list(range(n))
        rng.shuffle(order)
        moved = list(targets)
        for k, i in enumerate(order):
            moved[i] = targets[order[(k + 1) % n]]
        targets = moved
    return [NewExample(e["prompt"], t) for e, t in zip(rows, targets, strict=True)]


def phase_examples(phase: int, n: int, seed: int) -> dict[str, list[NewExample]]:
    """The buckets arriving in ``phase`` (0-based)."""
    return {s.name: bucket_examples(s, n, seed) for s in STREAM if s.phase == phase}


def scored_buckets() -> list[str]:
    """The buckets in the served mean accuracy: all but noise (no answer is right)."""
    return [s.name for s in STREAM if s.category != "noise"]


def category_of(bucket: str) -> str:
    return next((s.category for s in STREAM if s.name == bucket), "other")


def submit(engine: Any, examples: dict[str, list[NewExample]]) -> None:
    with write_transaction(engine) as conn:
        for bucket, rows in examples.items():
            ingest_batch(conn, bucket, rows)


# --- one run ----------------------------------------------------------------------------


def run_one(
    policy: str, seed: int, cfg: RunConfig, model_dir: Path, work: Path, variant: str = ""
) -> RunResult:
    """Train one policy on the stream in a fresh SQLite database; measure the result."""
    name = f"{policy}-{seed}{'-' + variant if variant else ''}"
    engine = make_engine(f"sqlite:///{work / (name + '.db')}")
    upgrade(engine)
    ensure_alignment_suite(engine)
    submit(engine, phase_examples(0, cfg.examples, seed))
    learner = Learner(
        engine,
        LearnerConfig(
            batch_size=cfg.batch_size,
            candidate_every=cfg.candidate_every,
            checkpoint_every=cfg.candidate_every,
            focus_share=cfg.focus_share,
            poll_seconds=0.05,
            max_steps=cfg.steps,
            device="cpu",
            seed=seed,
            num_threads=1,
        ),
        work / name,
        model_dir,
        str(model_dir),
        holder=f"bench-{name}",
        replay=ReplayConfig(seed=seed, alpha=cfg.alpha),
        teacher=TeacherConfig(
            policy=policy,
            round_steps=cfg.round_steps,
            eval_probes=cfg.eval_probes,
            rest_seconds=1.0,
        ),
        gate=GateConfig(
            enabled=cfg.gate,
            eval_max_probes=cfg.gate_probes,
            alignment_max_probes=cfg.alignment_probes,
        ),
    )
    started = time.monotonic()
    rested = drive(learner, engine, cfg, seed)
    wall = time.monotonic() - started
    with engine.connect() as conn:
        result = measure(conn, learner, policy, seed, variant, cfg, wall, rested)
    engine.dispose()
    return result


def drive(learner: Learner, engine: Any, cfg: RunConfig, seed: int) -> bool:
    """Run the learner in a thread, submitting later phases as its steps pass a third and
    two thirds of the budget; True when it ended resting (no learnable bucket)."""
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, args=(stop,), daemon=True)
    thread.start()
    phase, last_step, last_move = 1, -1, time.monotonic()
    rested = False
    while thread.is_alive():
        time.sleep(0.2)
        step = learner.state.step
        if phase < PHASES and step >= phase * cfg.steps // PHASES:
            submit(engine, phase_examples(phase, cfg.examples, seed))
            phase += 1
            last_move = time.monotonic()
        if step != last_step:
            last_step, last_move = step, time.monotonic()
        idle = time.monotonic() - last_move
        if idle > cfg.idle_seconds and learner.curriculum.rest:
            if phase < PHASES:  # resting before the next phase is due: bring it now
                submit(engine, phase_examples(phase, cfg.examples, seed))
                phase, last_move = phase + 1, time.monotonic()
            else:
                rested = True
                stop.set()
    thread.join()
    return rested


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def measure(
    conn: Any,
    learner: Learner,
    policy: str,
    seed: int,
    variant: str,
    cfg: RunConfig,
    wall: float,
    rested: bool,
) -> RunResult:
    report = matrix_report(conn)
    rows = {row["version"]: row for row in report["versions"]}
    base = rows.get(None, {"accuracy": {}})
    scored = scored_buckets()
    buckets = [s.name for s in STREAM]

    def accuracy(row: dict[str, Any], bucket: str) -> float:
        # A bucket a version was not evaluated on (it had not arrived) counts at base level.
        return row["accuracy"].get(bucket, base["accuracy"].get(bucket, 0.0))

    served = served_versions(conn)  # (train step, version) as they became active
    curve = [(0, _mean([accuracy(base, b) for b in scored]))]
    per_bucket: dict[str, list[tuple[int, float]]] = {b: [(0, accuracy(base, b))] for b in buckets}
    for step, version in served:
        row = rows.get(version, base)
        curve.append((step, _mean([accuracy(row, b) for b in scored])))
        for b in buckets:
            per_bucket[b].append((step, accuracy(row, b)))
    active = rows.get(report["active_version"], base)
    alignment = [b for b in base["accuracy"] if b.startswith("alignment")]
    base_align = _mean([base["accuracy"][b] for b in alignment])
    active_align = _mean([active["accuracy"].get(b, 0.0) for b in alignment])
    seen = learner.state.seen_per_bucket
    total = sum(seen.values()) or 1
    focus_steps: dict[str, int] = {}
    for d in recent_decisions(conn, 1_000_000):
        if d.bucket is not None:
            focus_steps[d.bucket] = focus_steps.get(d.bucket, 0) + (d.steps or 0)
    all_steps = sum(focus_steps.values()) or 1
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    for bucket, n in focus_steps.items():
        category = category_of(bucket)
        by_category[category] = by_category.get(category, 0.0) + n / all_steps
    verdicts: dict[str, int] = {}
    for v in registry.list_versions(conn):
        verdicts[v.status] = verdicts.get(v.status, 0) + 1
    return RunResult(
        policy=policy,
        seed=seed,
        variant=variant,
        steps=learner.state.step,
        wall_s=round(wall, 1),
        final_accuracy=curve[-1][1],
        curve=curve,
        per_bucket=per_bucket,
        backward_transfer=active.get("backward_transfer"),
        forgetting=active.get("forgetting"),
        alignment_retention=active_align / base_align if base_align else None,
        shares={b: round(n / all_steps, 4) for b, n in sorted(focus_steps.items())},
        category_shares={c: round(x, 4) for c, x in by_category.items()},
        example_shares={b: round(n / total, 4) for b, n in sorted(seen.items())},
        rested=rested,
        verdicts=verdicts,
    )


def served_versions(conn: Any) -> list[tuple[int, int | None]]:
    """(train step of the learner when it happened, newly active version), in order."""
    steps = {v.version: v.train_step for v in registry.list_versions(conn)}
    out: list[tuple[int, int | None]] = []
    for event in registry.history(conn):
        if event.action in ("promote", "force", "rollback"):
            step = steps.get(event.to_version, 0) if event.to_version is not None else 0
            out.append((max(step, out[-1][0] if out else 0), event.to_version))
    return out


# --- the whole benchmark ----------------------------------------------------------------


def plan(args: argparse.Namespace, cfg: RunConfig) -> list[tuple[str, int, RunConfig, str]]:
    # Seed-major: a run cut short still has every policy on its first seeds (paired).
    runs = [(p, s, cfg, "") for s in range(args.seeds) for p in args.policies]
    if args.ablations:
        runs += [
            ("lp_zpd", 0, dataclasses.replace(cfg, alpha=0.0), "uniform replay (alpha 0)"),
            ("lp_zpd", 0, dataclasses.replace(cfg, focus_share=0.65), "replay share 0.05"),
            ("lp_zpd", 0, dataclasses.replace(cfg, gate=False), "gate off"),
        ]
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="uniform and lp_zpd, 1 seed, short")
    parser.add_argument("--all", action="store_true", help="every policy, and the ablations")
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--examples", type=int)
    parser.add_argument("--model", choices=["micro", "small", "tiny", "sturdy"])
    parser.add_argument("--no-ablations", dest="ablations", action="store_false", default=None)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    quick = args.quick
    main_policies = list(POLICIES) if args.all else list(MAIN_POLICIES)
    args.policies = args.policies or (["uniform", "lp_zpd"] if quick else main_policies)
    args.seeds = args.seeds or (1 if quick else 5)
    args.ablations = args.all if args.ablations is None else args.ablations
    cfg = RunConfig()
    if quick:
        cfg = dataclasses.replace(cfg, steps=240, examples=150, candidate_every=80,
                                  alignment_probes=20, idle_seconds=5.0)  # fmt: skip
    overrides = {"steps": args.steps, "examples": args.examples, "model": args.model}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    preset = dataclasses.replace(BuiltinConfig.preset(cfg.model), num_threads=1)
    model_dir = ensure_builtin_model(args.cache, preset, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan(args, cfg)
    results: list[RunResult | None] = [None] * len(runs)
    with tempfile.TemporaryDirectory() as tmp:
        # Runs are independent (own database, own data dir, one torch thread each), so
        # --jobs of them share the cores; wall times then include that sharing.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {
                pool.submit(run_one, policy, seed, run_cfg, model_dir, Path(tmp), variant): i
                for i, (policy, seed, run_cfg, variant) in enumerate(runs)
            }
            for future in as_completed(futures):
                result = results[futures[future]] = future.result()
                rested = " (rested)" if result.rested else ""
                waste = sum(result.category_shares.get(c, 0.0) for c in WASTE)
                print(f"{result.policy} seed {result.seed} {result.variant}: acc "
                      f"{result.final_accuracy:.3f}, waste {waste:.1%}, "
                      f"{result.steps} steps, {result.wall_s:.0f} s{rested}",
                      flush=True)  # fmt: skip
    return report(args, cfg, [r for r in results if r is not None], argv)


def report(
    args: argparse.Namespace, cfg: RunConfig, results: list[RunResult], argv: list[str] | None
) -> int:
    meta = {
        "command": "python bench/stream.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": dataclasses.asdict(cfg),
        "stream": [dataclasses.asdict(s) for s in STREAM],
        "jobs": args.jobs,
    }
    runs = [dataclasses.asdict(r) for r in results]
    summary = stream_report.summarize(runs, WASTE, cfg.steps)
    text = stream_report.markdown(meta, summary, runs)
    plots = stream_report.plot(runs, args.out, list(POLICIES))
    if plots:
        text += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    print(text)
    (args.out / "stream.md").write_text(text)
    payload = {**meta, "summary": summary, "runs": runs}
    (args.out / "stream.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
