"""The continual-learning benchmark: every teacher policy on one standard stream, through the
real learner (replay store, rounds, candidates, the gate), on the builtin model.

The stream: task buckets of the synthetic families at mixed difficulty arriving in three
phases (new buckets appear when a third and two thirds of the step budget are spent),
a noise bucket (prompts of ``reverse`` with random targets) from the start, and the
builtin alignment suite. Every policy gets the same data, seeds and step budget. A run
ends at the budget, or when the learner has rested (no learnable bucket) for
``--idle-seconds`` after the last phase arrived.

Per policy (mean and spread over seeds) it reports, for the *served* model (the active
version): final mean probe accuracy over the task buckets, steps to reach 90% of the
best final mean accuracy of any policy, backward transfer and forgetting (of the active
version's row of the accuracy matrix), alignment retention (alignment-bucket accuracy
relative to the base model), the share of trained examples from the noise bucket and
from each bucket, and wall time. Ablations on ``lp_zpd``, seed 0: uniform instead of
prioritized replay (alpha 0), another replay share, and the gate off.

    python bench/stream.py --quick      # 2 policies x 1 seed, short budget (< 5 min here)
    python bench/stream.py              # all 7 policies x 3 seeds + ablations

Results: bench/results/stream.{md,json} and stream-*.png (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
NOISE = "noise"
# (bucket, family, level) per phase: mixed difficulty, families the builtin model was not
# bootstrapped on (sort, counting) beside harder levels of ones it was (copy, reverse,
# addition, comparison).
PHASES: tuple[tuple[tuple[str, str, int], ...], ...] = (
    (("copy-l3", "copy", 3), ("counting-l1", "counting", 1), ("reverse-l2", "reverse", 2)),
    (("sort-l1", "sort", 1), ("comparison-l2", "comparison", 2), ("addition-l2", "addition", 2)),
    (("counting-l2", "counting", 2), ("sort-l2", "sort", 2)),
)


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run's budget and learner settings (the same for every policy)."""

    model: str = "small"  # builtin preset
    steps: int = 900
    examples: int = 300  # per bucket (a tenth become probes)
    batch_size: int = 16
    round_steps: int = 20
    candidate_every: int = 150
    eval_probes: int = 32
    gate_probes: int = 32  # probes per learned bucket at each candidate
    alignment_probes: int = 100  # per alignment bucket at each candidate
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
    curve: list[tuple[int, float]]  # (train step, served mean task accuracy)
    per_bucket: dict[str, list[tuple[int, float]]]  # served accuracy over steps per bucket
    backward_transfer: float | None
    forgetting: float | None
    alignment_retention: float | None
    noise_share: float  # of the training steps (focus rounds on the noise bucket)
    shares: dict[str, float]  # of the training steps, per focus bucket
    example_shares: dict[str, float]  # of the trained examples (focus, replay, anchors)
    rested: bool
    verdicts: dict[str, int] = field(default_factory=dict)


# --- the stream -------------------------------------------------------------------------


def phase_examples(phase: int, n: int, seed: int) -> dict[str, list[NewExample]]:
    """The buckets arriving in ``phase`` (0-based); phase 0 brings the noise bucket too."""
    out = {
        bucket: [NewExample(e["prompt"], e["target"]) for e in make_examples(fam, n, lvl, seed)]
        for bucket, fam, lvl in PHASES[phase]
    }
    if phase == 0:
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        out[NOISE] = [
            NewExample(e["prompt"], "".join(rng.choice(letters) for _ in e["target"]))
            for e in make_examples("reverse", n, 1, seed + 1000)
        ]
    return out


def task_buckets() -> list[str]:
    return [b for phase in PHASES for b, _, _ in phase]


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
        if phase < len(PHASES) and step >= phase * cfg.steps // len(PHASES):
            submit(engine, phase_examples(phase, cfg.examples, seed))
            phase += 1
            last_move = time.monotonic()
        if step != last_step:
            last_step, last_move = step, time.monotonic()
        idle = time.monotonic() - last_move
        if idle > cfg.idle_seconds and learner.curriculum.rest:
            if phase < len(PHASES):  # resting before the next phase is due: bring it now
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
    tasks = task_buckets()

    def task_accuracy(row: dict[str, Any], bucket: str) -> float:
        # A bucket a version was not evaluated on (it had not arrived) counts at base level.
        return row["accuracy"].get(bucket, base["accuracy"].get(bucket, 0.0))

    served = served_versions(conn)  # (train step, version) as they became active
    curve = [(0, _mean([task_accuracy(base, b) for b in tasks]))]
    per_bucket: dict[str, list[tuple[int, float]]] = {b: [] for b in tasks}
    for step, version in served:
        row = rows.get(version, base)
        curve.append((step, _mean([task_accuracy(row, b) for b in tasks])))
        for b in tasks:
            per_bucket[b].append((step, task_accuracy(row, b)))
    active = rows.get(report["active_version"], base)
    alignment = [b for b in base["accuracy"] if b.startswith("alignment")]
    base_align = _mean([base["accuracy"][b] for b in alignment])
    active_align = _mean([active["accuracy"].get(b, 0.0) for b in alignment])
    seen = learner.state.seen_per_bucket
    total = sum(seen.values()) or 1
    focus_steps: dict[str, int] = {}
    for d in recent_decisions(conn, 1_000_000):
        if d.bucket is not None:
            focus_steps[d.bucket] = focus_steps.get(d.bucket, 0) + d.steps
    all_steps = sum(focus_steps.values()) or 1
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
        noise_share=focus_steps.get(NOISE, 0) / all_steps,
        shares={b: round(n / all_steps, 4) for b, n in sorted(focus_steps.items())},
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


def steps_to(curve: list[tuple[int, float]], level: float) -> int | None:
    """First train step at which the served accuracy reached ``level`` (None: never)."""
    return next((step for step, acc in curve if acc >= level), None)


def _stats(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None}
    sd = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": round(_mean(present), 4), "sd": round(sd, 4)}


def summarize(results: list[RunResult]) -> dict[str, Any]:
    main = [r for r in results if not r.variant]
    best = max((r.final_accuracy for r in main), default=0.0)
    target = 0.9 * _mean_by_policy_best(main)
    table: dict[str, Any] = {}
    for policy in dict.fromkeys(r.policy for r in main):
        runs = [r for r in main if r.policy == policy]
        reached = [steps_to(r.curve, target) for r in runs]
        table[policy] = {
            "final_accuracy": _stats([r.final_accuracy for r in runs]),
            "steps_to_90pct": _stats([float(s) if s is not None else None for s in reached]),
            "reached_90pct": sum(s is not None for s in reached),
            "backward_transfer": _stats([r.backward_transfer for r in runs]),
            "forgetting": _stats([r.forgetting for r in runs]),
            "alignment_retention": _stats([r.alignment_retention for r in runs]),
            "noise_share": _stats([r.noise_share for r in runs]),
            "wall_s": _stats([r.wall_s for r in runs]),
            "seeds": len(runs),
        }
    return {"best_final_accuracy": best, "target_90pct": round(target, 4), "policies": table}


def _mean_by_policy_best(results: list[RunResult]) -> float:
    by_policy: dict[str, list[float]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r.final_accuracy)
    return max((_mean(v) for v in by_policy.values()), default=0.0)


def _fmt(stat: dict[str, float | None], pct: bool = False) -> str:
    if stat["mean"] is None:
        return "n/a"
    scale = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{stat['mean'] * scale:.3g}{unit} ± {(stat['sd'] or 0) * scale:.2g}"


def markdown(meta: dict[str, Any], summary: dict[str, Any], results: list[RunResult]) -> str:
    lines = [
        "# Continual-learning stream",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']['nproc']} cores "
        f"({meta['machine']['cpu']}); builtin `{meta['config']['model']}`, budget "
        f"{meta['config']['steps']} steps, {meta['config']['examples']} examples per bucket, "
        f"rounds of {meta['config']['round_steps']} steps, a candidate every "
        f"{meta['config']['candidate_every']} steps, gate on, {meta['jobs']} runs in parallel "
        "(one torch thread each). Served model = active version.",
        "",
        f"Steps to 90% are to {summary['target_90pct']:.3f} mean accuracy (90% of the best "
        "policy's mean final accuracy); `reached` counts the seeds that got there.",
        "",
        "| policy | final mean acc | steps to 90% (reached) | BWT | forgetting "
        "| alignment retention | noise share | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for policy, row in summary["policies"].items():
        lines.append(
            f"| {policy} | {_fmt(row['final_accuracy'])} | {_fmt(row['steps_to_90pct'])} "
            f"({row['reached_90pct']}/{row['seeds']}) | {_fmt(row['backward_transfer'])} | "
            f"{_fmt(row['forgetting'])} | {_fmt(row['alignment_retention'], pct=True)} | "
            f"{_fmt(row['noise_share'], pct=True)} | {_fmt(row['wall_s'])} |"
        )
    variants = [r for r in results if r.variant]
    if variants:
        lines += ["", "Ablations (lp_zpd, seed 0):", "",
                  "| variant | final mean acc | forgetting | alignment retention | noise share |",
                  "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in variants:
            retention = "n/a" if r.alignment_retention is None else f"{r.alignment_retention:.1%}"
            forgetting = "n/a" if r.forgetting is None else f"{r.forgetting:.3f}"
            lines.append(f"| {r.variant} | {r.final_accuracy:.3f} | {forgetting} | "
                         f"{retention} | {r.noise_share:.1%} |")  # fmt: skip
    lines += ["", "Share of training steps per focus bucket (mean over seeds):", ""]
    for policy in summary["policies"]:
        runs = [r for r in results if r.policy == policy and not r.variant]
        buckets = sorted({b for r in runs for b in r.shares})
        shares = ", ".join(
            f"{b} {_mean([r.shares.get(b, 0.0) for r in runs]):.1%}" for b in buckets
        )
        lines.append(f"- {policy}: {shares}")
    return "\n".join(lines) + "\n"


def plot(results: list[RunResult], out: Path) -> list[str]:
    """PNG plots; returns their file names (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return []
    main = [r for r in results if not r.variant]
    fig, ax = plt.subplots(figsize=(8, 5))
    for policy in dict.fromkeys(r.policy for r in main):
        for i, r in enumerate(x for x in main if x.policy == policy):
            xs, ys = zip(*r.curve, strict=True)
            ax.step(xs, ys, where="post", alpha=0.8, label=policy if i == 0 else None,
                    color=f"C{list(POLICIES).index(policy)}")  # fmt: skip
    ax.set_xlabel("train step")
    ax.set_ylabel("served mean probe accuracy (task buckets)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "stream-accuracy.png", dpi=110)
    plt.close(fig)
    names = ["stream-accuracy.png"]
    lp = next((r for r in main if r.policy == "lp_zpd"), None)
    if lp is not None:
        fig, ax = plt.subplots(figsize=(8, 5))
        for bucket, points in lp.per_bucket.items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.step(xs, ys, where="post", label=bucket)
        ax.set_xlabel("train step")
        ax.set_ylabel("served probe accuracy")
        ax.set_title(f"lp_zpd, seed {lp.seed}: per bucket")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "stream-buckets-lp_zpd.png", dpi=110)
        plt.close(fig)
        names.append("stream-buckets-lp_zpd.png")
    return names


def plan(args: argparse.Namespace, cfg: RunConfig) -> list[tuple[str, int, RunConfig, str]]:
    runs = [(p, s, cfg, "") for p in args.policies for s in range(args.seeds)]
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
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--examples", type=int)
    parser.add_argument("--model", choices=["micro", "small", "tiny"])
    parser.add_argument("--no-ablations", dest="ablations", action="store_false", default=None)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    quick = args.quick
    args.policies = args.policies or (["uniform", "lp_zpd"] if quick else list(POLICIES))
    args.seeds = args.seeds or (1 if quick else 3)
    args.ablations = (not quick) if args.ablations is None else args.ablations
    cfg = RunConfig()
    if quick:
        cfg = dataclasses.replace(cfg, steps=240, examples=150, candidate_every=80,
                                  alignment_probes=40, idle_seconds=5.0)  # fmt: skip
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
                print(f"{result.policy} seed {result.seed} {result.variant}: acc "
                      f"{result.final_accuracy:.3f}, noise {result.noise_share:.1%}, "
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
        "jobs": args.jobs,
    }
    summary = summarize(results)
    text = markdown(meta, summary, results)
    plots = plot(results, args.out)
    if plots:
        text += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    print(text)
    (args.out / "stream.md").write_text(text)
    payload = {**meta, "summary": summary, "runs": [dataclasses.asdict(r) for r in results]}
    (args.out / "stream.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
