"""Statistics, tables and plots of ``bench/stream.py``: every policy against ``uniform``,
paired by seed (the same data and seeds for both), with 95% bootstrap intervals.

Runs are plain dicts (``RunResult`` as JSON), so the report can be rebuilt from a saved
``stream.json``:  python bench/stream_report.py bench/results/stream.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP = 10_000
Run = dict[str, Any]
WASTE = ("mastered", "noise", "too_hard")  # categories whose steps teach nothing


def steps_to(curve: Sequence[Sequence[float]], level: float) -> int | None:
    """First train step at which the served accuracy reached ``level`` (None: never)."""
    return next((int(step) for step, acc in curve if acc >= level), None)


def area(curve: Sequence[Sequence[float]], budget: int) -> float:
    """Mean served accuracy over steps 0..budget: the area under the step curve / budget
    (the last value holds to the budget, so a run that rested early is not cut short)."""
    total, points = 0.0, [(min(int(s), budget), a) for s, a in curve] + [(budget, 0.0)]
    for (step, acc), (next_step, _) in pairwise(points):
        total += acc * max(0, next_step - step)
    return total / budget if budget else 0.0


def waste_share(run: Run, waste: Sequence[str]) -> float:
    return sum(run["category_shares"].get(c, 0.0) for c in waste)


def run_metrics(run: Run, budget: int, best: float, waste: Sequence[str]) -> dict[str, Any]:
    """The per-run figures compared between policies. Steps to a level a run never
    reached count as the budget (a lower bound), and ``reached_*`` says how often."""
    s50, s90 = steps_to(run["curve"], 0.5 * best), steps_to(run["curve"], 0.9 * best)
    return {
        "final_accuracy": run["final_accuracy"],
        "auc": area(run["curve"], budget),
        "steps_to_50pct": budget if s50 is None else s50,
        "steps_to_90pct": budget if s90 is None else s90,
        "reached_50pct": s50 is not None,
        "reached_90pct": s90 is not None,
        "forgetting": run["forgetting"] or 0.0,
        "alignment_retention": run["alignment_retention"],
        "waste_share": waste_share(run, waste),
        **{f"share_{c}": run["category_shares"].get(c, 0.0) for c in run["category_shares"]},
    }


def bootstrap_ci(
    pairs: Sequence[tuple[float, float]], stat: Callable[[np.ndarray, np.ndarray], float]
) -> tuple[float, float, float]:
    """(estimate, low, high): ``stat(policy, uniform)`` and its 95% percentile-bootstrap
    interval, resampling the seeds (pairs) with replacement (Efron & Tibshirani 1993)."""
    a = np.array([p[0] for p in pairs], dtype=float)  # (seeds,)
    b = np.array([p[1] for p in pairs], dtype=float)  # (seeds,)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))  # (B, seeds)
    draws = np.array([stat(a[i], b[i]) for i in idx])  # (B,)
    draws = draws[np.isfinite(draws)]
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
    return float(stat(a, b)), float(low), float(high)


def ratio_of_means(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.mean() / b.mean()) if b.mean() else float("nan")


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float((a - b).mean())


# Which paired statistic each compared figure gets.
PAIRED: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "steps_to_50pct": ratio_of_means,
    "steps_to_90pct": ratio_of_means,
    "auc": ratio_of_means,
    "final_accuracy": mean_difference,
    "forgetting": mean_difference,
    "alignment_retention": mean_difference,
    "waste_share": mean_difference,
}


def summarize(runs: list[Run], waste: Sequence[str], budget: int | None = None) -> dict[str, Any]:
    main = [r for r in runs if not r["variant"]]
    budget = budget or max((r["steps"] for r in main), default=0)
    finals: dict[str, list[float]] = {}
    for r in main:
        finals.setdefault(r["policy"], []).append(r["final_accuracy"])
    best = max((statistics.mean(v) for v in finals.values()), default=0.0)
    metrics = {(r["policy"], r["seed"]): run_metrics(r, budget, best, waste) for r in main}
    policies: dict[str, Any] = {}
    for policy in finals:
        rows = [m for (p, _), m in sorted(metrics.items()) if p == policy]
        policies[policy] = {key: _stats([m[key] for m in rows]) for key in rows[0]}
        policies[policy]["seeds"] = len(rows)
    paired: dict[str, Any] = {}
    for policy in finals:
        if policy == "uniform":
            continue
        seeds = sorted(s for p, s in metrics if p == policy and ("uniform", s) in metrics)
        if len(seeds) < 2:
            continue
        paired[policy] = {"seeds": len(seeds)}
        for key, stat in PAIRED.items():
            pairs = [(metrics[(policy, s)][key], metrics[("uniform", s)][key]) for s in seeds]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if len(pairs) >= 2:
                estimate, low, high = bootstrap_ci(pairs, stat)
                paired[policy][key] = {"estimate": estimate, "low": low, "high": high}
    return {"budget": budget, "best_final_accuracy": best, "policies": policies,
            "paired_vs_uniform": paired}  # fmt: skip


def _stats(values: list[Any]) -> dict[str, float | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None}
    sd = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": round(statistics.mean(present), 4), "sd": round(sd, 4)}


def targets(summary: dict[str, Any], policy: str = "lp_zpd") -> list[tuple[str, bool | None]]:
    """The issue's targets for ``policy`` against uniform: (what, met)."""
    p = summary["paired_vs_uniform"].get(policy, {})
    row = summary["policies"].get(policy, {})

    def get(key: str, field: str) -> float | None:
        value = p.get(key, {}).get(field)
        return None if value is None or not np.isfinite(value) else float(value)

    def mean(key: str) -> float | None:
        return (row.get(key) or {}).get("mean")

    ratio90, high90 = get("steps_to_90pct", "estimate"), get("steps_to_90pct", "high")
    auc, waste = get("auc", "estimate"), mean("waste_share")
    forgetting, retention = mean("forgetting"), mean("alignment_retention")

    return [
        ("steps to 90%: at most half of uniform's, 95% interval of the ratio below 1",
         None if ratio90 is None or high90 is None else ratio90 <= 0.5 and high90 < 1),
        ("area under the served accuracy curve at least 1.25x uniform's",
         None if auc is None else auc >= 1.25),
        ("at most 15% of steps on mastered, noise and too-hard buckets",
         None if waste is None else waste <= 0.15),
        ("forgetting at most 2 points", None if forgetting is None else forgetting <= 0.02),
        ("alignment retention at least 99% of base",
         None if retention is None else retention >= 0.99),
    ]  # fmt: skip


def _fmt(stat: dict[str, float | None] | None, pct: bool = False) -> str:
    if not stat or stat["mean"] is None:
        return "n/a"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    return f"{stat['mean'] * scale:.3g}{unit} ± {(stat['sd'] or 0) * scale:.2g}"


def _ci(cell: dict[str, float] | None, pct: bool = False) -> str:
    if not cell:
        return "n/a"
    scale, unit = (100.0, " pt") if pct else (1.0, "")
    e, lo, hi = (cell[k] * scale for k in ("estimate", "low", "high"))
    return f"{e:.3g}{unit} [{lo:.3g}, {hi:.3g}]"


def markdown(meta: dict[str, Any], summary: dict[str, Any], runs: list[Run]) -> str:
    cfg = meta["config"]
    lines = [
        "# Continual-learning stream",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']['nproc']} cores "
        f"({meta['machine']['cpu']}); builtin `{cfg['model']}`, budget {cfg['steps']} steps, "
        f"{cfg['examples']} examples per bucket, rounds of {cfg['round_steps']} steps, a "
        f"candidate every {cfg['candidate_every']} steps, gate "
        f"{'on' if cfg['gate'] else 'off'}, {meta['jobs']} runs in parallel (one torch "
        "thread each). Served model = active version; served mean accuracy is over the "
        "non-noise buckets (a bucket counts at the base's accuracy until it arrives).",
        "",
        "Stream (phase: buckets arrive at 0, 1/3 and 2/3 of the budget):",
        "",
        "| bucket | family, level | phase | category |",
        "| --- | --- | ---: | --- |",
    ]
    for s in meta["stream"]:
        noise = f" ({s['noise']} targets)" if s["noise"] else ""
        lines.append(f"| {s['name']} | {s['family']} l{s['level']}{noise} | {s['phase']} "
                     f"| {s['category']} |")  # fmt: skip
    lines += [
        "",
        f"Per policy, mean ± sd over seeds. Levels: 50% and 90% of the best policy's mean "
        f"final accuracy ({summary['best_final_accuracy']:.3f}); a run that never got there "
        "counts as the budget, `reached` says how many did. Waste: share of training steps "
        "on mastered, noise and too-hard buckets.",
        "",
        "| policy | final acc | AUC | steps to 50% (reached) | steps to 90% (reached) "
        "| forgetting | alignment retention | waste share | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for policy, row in summary["policies"].items():
        n = row["seeds"]
        r50 = round((row["reached_50pct"]["mean"] or 0) * n)
        r90 = round((row["reached_90pct"]["mean"] or 0) * n)
        lines.append(
            f"| {policy} | {_fmt(row['final_accuracy'])} | {_fmt(row['auc'])} | "
            f"{_fmt(row['steps_to_50pct'])} ({r50}/{n}) | {_fmt(row['steps_to_90pct'])} "
            f"({r90}/{n}) | {_fmt(row['forgetting'])} | "
            f"{_fmt(row['alignment_retention'], pct=True)} | "
            f"{_fmt(row['waste_share'], pct=True)} | {_fmt(_wall(runs, policy))} |"
        )
    lines += [
        "",
        "Paired against `uniform` (same seeds and data), estimate [95% bootstrap interval "
        "over seeds]: ratios of means for steps and AUC, differences of means otherwise.",
        "",
        "| policy | seeds | steps to 50% ratio | steps to 90% ratio | AUC ratio | final acc "
        "diff | forgetting diff | retention diff | waste share diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for policy, p in summary["paired_vs_uniform"].items():
        lines.append(
            f"| {policy} | {p['seeds']} | {_ci(p.get('steps_to_50pct'))} | "
            f"{_ci(p.get('steps_to_90pct'))} | {_ci(p.get('auc'))} | "
            f"{_ci(p.get('final_accuracy'))} | {_ci(p.get('forgetting'))} | "
            f"{_ci(p.get('alignment_retention'), pct=True)} | "
            f"{_ci(p.get('waste_share'), pct=True)} |"
        )
    if "lp_zpd" in summary["paired_vs_uniform"]:
        lines += ["", "Targets for `lp_zpd` (issue 22):", ""]
        for what, met in targets(summary):
            mark = "n/a" if met is None else ("met" if met else "**not met**")
            lines.append(f"- {what}: {mark}")
    lines += ["", "Share of training steps per category (mean over seeds):", ""]
    for policy, row in summary["policies"].items():
        shares = ", ".join(f"{k.removeprefix('share_')} {_fmt(v, pct=True)}"
                           for k, v in row.items() if k.startswith("share_"))  # fmt: skip
        lines.append(f"- {policy}: {shares}")
    variants = [r for r in runs if r["variant"]]
    if variants:
        lines += ["", "Ablations (lp_zpd):", "", "| variant | seed | final acc | forgetting |",
                  "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for r in variants:
            lines.append(f"| {r['variant']} | {r['seed']} | {r['final_accuracy']:.3f} | "
                         f"{r['forgetting'] or 0:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _wall(runs: list[Run], policy: str) -> dict[str, float | None]:
    return _stats([r["wall_s"] for r in runs if r["policy"] == policy and not r["variant"]])


def plot(runs: list[Run], out: Path, order: list[str]) -> list[str]:
    """PNG plots; returns their file names (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return []
    main = [r for r in runs if not r["variant"]]
    budget = max((r["steps"] for r in main), default=1)
    grid = np.linspace(0, budget, 200)  # (200,) steps at which every seed's curve is read
    fig, ax = plt.subplots(figsize=(8, 5))
    for policy in dict.fromkeys(r["policy"] for r in main):
        ys = np.array([_on_grid(r["curve"], grid) for r in main if r["policy"] == policy])
        color = f"C{order.index(policy) if policy in order else 0}"
        ax.plot(grid, ys.mean(axis=0), color=color, label=f"{policy} (n={len(ys)})")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.15)
    ax.set_xlabel("train step")
    ax.set_ylabel("served mean accuracy (non-noise buckets)")
    ax.set_title("mean over seeds, band: min..max over seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "stream-accuracy.png", dpi=110)
    plt.close(fig)
    names = ["stream-accuracy.png"]
    lp = [r for r in main if r["policy"] == "lp_zpd"]
    if lp:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for i, bucket in enumerate(lp[0]["per_bucket"]):
            ys = np.array([_on_grid(r["per_bucket"][bucket], grid) for r in lp])
            ax.plot(grid, ys.mean(axis=0), label=bucket, color=f"C{i % 10}",
                    linestyle="-" if i < 10 else "--")  # fmt: skip
        ax.set_xlabel("train step")
        ax.set_ylabel("served probe accuracy")
        ax.set_title(f"lp_zpd: per bucket, mean over {len(lp)} seeds")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "stream-buckets-lp_zpd.png", dpi=110)
        plt.close(fig)
        names.append("stream-buckets-lp_zpd.png")
    return names


def _on_grid(curve: Sequence[Sequence[float]], grid: np.ndarray) -> np.ndarray:
    """A step curve [(step, value), ...] read at every grid step (the last value holds)."""
    steps = np.array([c[0] for c in curve], dtype=float)
    values = np.array([c[1] for c in curve], dtype=float)
    idx = np.searchsorted(steps, grid, side="right") - 1  # (len(grid),)
    return values[np.clip(idx, 0, len(values) - 1)]


def main(argv: list[str]) -> int:
    """Rebuild stream.md and the plots from a saved stream.json."""
    path = Path(argv[0])
    payload = json.loads(path.read_text())
    summary = summarize(payload["runs"], WASTE, payload["config"]["steps"])
    text = markdown(payload, summary, payload["runs"])
    plots = plot(payload["runs"], path.parent, [])
    text += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    (path.parent / "stream.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
