"""The soak benchmark's growth fits, report and plot (the run itself: ``bench/soak.py``)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

RSS_TARGET_PCT_PER_HOUR = 5.0
INGEST_P99_TARGET_S = 1.0
INGEST_ROUTE = "POST /v1/tasks"


def series(samples: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """name -> [(minute, value)] of every numeric series in the samples."""
    out: dict[str, list[tuple[float, float]]] = {}

    def put(name: str, minute: float, value: Any) -> None:
        if isinstance(value, int | float):
            out.setdefault(name, []).append((minute, float(value)))

    for row in samples:
        minute = row["minute"]
        for proc in ("server", "learner"):
            for key, value in row[proc].items():
                put(f"{proc}.{key}", minute, value)
        put("db_mb", minute, row["db_mb"])
        for key, value in row["disk_mb"].items():
            put(f"disk_mb.{key}", minute, value)
        for table, value in row["rows"].items():
            put(f"rows.{table}", minute, value)
    return out


def fit_growth(samples: list[dict[str, Any]], warmup_minutes: float) -> dict[str, Any]:
    """Per series after the warm-up: first, last and max value, and the least-squares
    slope per hour, also as a share of the series' mean (None with under 3 points)."""
    fits = {}
    end = max((row["minute"] for row in samples), default=0.0)
    for name, points in series(samples).items():
        kept = [(m, v) for m, v in points if m >= warmup_minutes]
        if not kept:
            continue
        values = np.array([v for _, v in kept])
        per_hour, pct = _slope(kept)
        # The second half alone: does the growth slow down (caches filling up) or not?
        _, late_pct = _slope([(m, v) for m, v in kept if m >= end / 2])
        fits[name] = {
            "first": values[0].item(),
            "last": values[-1].item(),
            "max": values.max().item(),
            "per_hour": per_hour,
            "pct_per_hour": pct,
            "pct_per_hour_second_half": late_pct,
        }
    return fits


def _slope(points: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """Least-squares slope per hour of (minute, value) points, absolute and as a
    percentage of their mean (None with under 3 points)."""
    if len(points) < 3:
        return None, None
    minutes, values = np.array([m for m, _ in points]), np.array([v for _, v in points])
    slope, mean = float(np.polyfit(minutes / 60, values, 1)[0]), float(values.mean())
    return round(slope, 3), (None if mean <= 0 else round(100 * slope / mean, 2))


def _server_errors(totals: dict[str, dict[str, int]]) -> dict[str, int]:
    """5xx other than 503, transport errors and timeouts, by route and status."""
    bad: Counter[str] = Counter()
    for route, statuses in totals.items():
        for status, n in statuses.items():
            if not status.isdigit() or (status.startswith("5") and status != "503"):
                bad[f"{route} {status}"] += n
    return dict(bad)


def verdicts(report: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows."""
    growth, samples = report["growth"], report["samples"]
    rows = []
    for proc in ("server", "learner"):
        fit = growth.get(f"{proc}.rss_mb", {})
        pct, late = fit.get("pct_per_hour"), fit.get("pct_per_hour_second_half")
        rows.append((f"{proc} RSS growth after warm-up < {RSS_TARGET_PCT_PER_HOUR:g}%/h",
                     f"{pct}%/h, second half {late}%/h ({fit.get('first')} -> "
                     f"{fit.get('last')} MB)",
                     pct is not None and pct < RSS_TARGET_PCT_PER_HOUR))  # fmt: skip
    cap = report["config"]["decision_rows"]
    decisions = [row["rows"].get("teacher_decisions", 0) for row in samples]
    step = max([b - a for a, b in itertools.pairwise(decisions)] + [0])
    rows.append((f"teacher_decisions bounded by the configured {cap} rows (+ one interval)",
                 f"max {max(decisions, default=0)}, last {decisions[-1] if decisions else 0}",
                 max(decisions, default=0) <= cap + step))  # fmt: skip
    errors = _server_errors(report["totals"])
    rows.append(("no 5xx other than 503, no transport error", str(errors or "none"), not errors))
    p99s = [row["routes"].get(INGEST_ROUTE, {}).get("p99_s") for row in samples]
    worst = max((p for p in p99s if p is not None), default=None)
    rows.append((f"ingestion p99 < {INGEST_P99_TARGET_S:g} s in every interval", f"worst {worst} s",
                 worst is not None and worst < INGEST_P99_TARGET_S))  # fmt: skip
    rows.append(("every acknowledged example stored once",
                 f"accepted {report['accepted']}, stored {report['stored']}",
                 report["accepted"] == report["stored"]))  # fmt: skip
    return rows


def markdown(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    lines = [
        "# Soak",
        "",
        f"`{report['command']}`, {report['date']}, {m['nproc']} cores ({m['cpu']}); "
        f"{report['backend']}, base `{Path(report['base_model']).name}`; {c['minutes']:g} "
        f"minutes, a sample every {c['sample_every']:g} s, fits after {c['warmup_minutes']:g} "
        f"minutes. Load: {c['batch_size']} examples every {c['batch_every']:g} s (a "
        f"resubmitted batch every 10th, a malformed one every 20th, every 4th a noise "
        f"bucket), {c['clients']} completion clients (a request a second each), every GET "
        f"route twice a second in turn, a rollback every {c['rollback_every']:g} s; "
        f"candidates every {c['candidate_every']} steps; retention: at most "
        f"{c['decision_rows']} teacher decisions.",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {v} | {'yes' if ok else 'no'} |" for t, v, ok in verdicts(report)]
    lines += ["", "Growth after the warm-up (least squares over the samples):", "",
              "| series | first | last | max | per hour | % of mean per hour | second half |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, fit in sorted(report["growth"].items()):
        if name.startswith("rows.") and fit["max"] == 0:
            continue
        lines.append(f"| {name} | {fit['first']:g} | {fit['last']:g} | {fit['max']:g} | "
                     f"{fit['per_hour']} | {fit['pct_per_hour']} | "
                     f"{fit['pct_per_hour_second_half']} |")  # fmt: skip
    lines += ["", "Requests over the whole run:", "", "| route | statuses |", "| --- | --- |"]
    for route, statuses in sorted(report["totals"].items()):
        text = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        lines.append(f"| {route} | {text} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """RSS, disk, rows per table and p99 latency per route over the run's minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(report["samples"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (axes[0][0], ["server.rss_mb", "learner.rss_mb"], "RSS (MB)", False),
        (axes[0][1], ["db_mb", "disk_mb.data_dir", "disk_mb.adapters", "disk_mb.checkpoints"],
         "disk (MB)", False),
        (axes[1][0], [n for n in data if n.startswith("rows.") and data[n][-1][1] > 0],
         "rows per table", True),
    ]  # fmt: skip
    for ax, names, title, log in panels:
        for name in names:
            if name in data:
                label = name.removeprefix("rows.").removeprefix("disk_mb.")
                ax.plot(*zip(*data[name], strict=True), label=label)
        ax.set_title(title)
        ax.set_yscale("log" if log else "linear")
        ax.legend(fontsize=7)
    ax = axes[1][1]
    routes = sorted({r for row in report["samples"] for r in row["routes"]})
    for route in routes:
        points = [(row["minute"], row["routes"][route]["p99_s"])
                  for row in report["samples"] if route in row["routes"]]  # fmt: skip
        if route.startswith("POST") or route in ("GET /v1/buckets", "GET /metrics"):
            ax.plot(*zip(*points, strict=True), label=route)
    ax.set_title("p99 latency per interval (s)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
