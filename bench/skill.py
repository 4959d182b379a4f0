"""How fast a new skill is learned: a family that is in no bootstrap data, trained alone by
the real learner (replay, rounds, candidates, the gate) on the builtin model, measured after
5 and 15 minutes of CPU training.

For each family one learner trains a fresh SQLite store holding one bucket of that family
(level 1) and the builtin alignment suite. At each mark (minutes of the learner process's
CPU time, so that runs sharing the cores are measured alike) it reports the held-out probe
accuracy of

- the *served* model (the active version: what ``/v1/completions`` answers with),
- the newest candidate (the training lineage, before the gate's verdict),

against the base model on the same probes, and the alignment-bucket accuracy of the served
model relative to the base (retention).

    python bench/skill.py                    # sort and counting, marks at 5 and 15 min
    python bench/skill.py --minutes 2 --marks 1 2 --families sort   # a quick look

Results: bench/results/skill.{md,json} (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
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
from learner.store.db import make_engine, upgrade, write_transaction  # noqa: E402
from learner.store.ingest import NewExample, ingest_batch  # noqa: E402
from learner.worker import Learner  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
NEW_FAMILIES = ("sort", "counting")  # in none of the builtin bootstrap stages


@dataclasses.dataclass(frozen=True)
class SkillConfig:
    """One family's run: data, budget and the learner settings that differ from defaults."""

    model: str = "small"
    examples: int = 600
    minutes: float = 15.0
    marks: tuple[float, ...] = (5.0, 15.0)
    # LearnerConfig fields besides the defaults: candidates more often than the service's
    # default, so the served accuracy is measured closer to each mark.
    learner: dict[str, Any] = dataclasses.field(default_factory=lambda: {"candidate_every": 100})


def _bucket_accuracy(conn: Any, bucket: str) -> dict[str, Any]:
    """Accuracy of the base, the served and the newest version on ``bucket``, and the served
    model's alignment retention, from the accuracy matrix."""
    report = matrix_report(conn)
    rows = {row["version"]: row for row in report["versions"]}
    base = rows.get(None, {"accuracy": {}})
    active = rows.get(report["active_version"], base)
    versions = [v for v in rows if v is not None]
    newest = rows[max(versions)] if versions else base
    alignment = [b for b in base["accuracy"] if b.startswith("alignment")]

    def mean(row: dict[str, Any], names: list[str]) -> float | None:
        values = [row["accuracy"][b] for b in names if b in row["accuracy"]]
        return sum(values) / len(values) if values else None

    base_align, active_align = mean(base, alignment), mean(active, alignment)
    verdicts: dict[str, int] = {}
    for v in registry.list_versions(conn):
        verdicts[v.status] = verdicts.get(v.status, 0) + 1
    return {
        "base": base["accuracy"].get(bucket),
        "served": active["accuracy"].get(bucket, base["accuracy"].get(bucket)),
        "newest_candidate": newest["accuracy"].get(bucket),
        "served_version": report["active_version"],
        "alignment_retention": active_align / base_align if base_align and active_align else None,
        "versions": verdicts,
    }


def run_family(family: str, cfg: SkillConfig, model_dir: Path, work: Path) -> dict[str, Any]:
    """Train one new family alone; the measurements at each CPU-minute mark."""
    bucket = f"{family}-l1"
    engine = make_engine(f"sqlite:///{work / (bucket + '.db')}")
    upgrade(engine)
    ensure_alignment_suite(engine)
    rows = [NewExample(e["prompt"], e["target"]) for e in make_examples(family, cfg.examples, 1, 0)]
    with write_transaction(engine) as conn:
        ingest_batch(conn, bucket, rows)
    options = cfg.learner
    learner = Learner(
        engine,
        LearnerConfig(device="cpu", num_threads=1, poll_seconds=0.05, seed=0, **options),
        work / bucket,
        model_dir,
        str(model_dir),
        holder=f"skill-{bucket}",
        teacher=TeacherConfig(rest_seconds=1.0),
        gate=GateConfig(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, args=(stop,), daemon=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    thread.start()
    marks: list[dict[str, Any]] = []
    pending = sorted(cfg.marks)
    while pending and thread.is_alive():
        time.sleep(1.0)
        cpu_min = (time.process_time() - cpu0) / 60
        if cpu_min >= pending[0]:
            pending.pop(0)
            with engine.connect() as conn:
                point = _bucket_accuracy(conn, bucket)
            point.update(cpu_minutes=round(cpu_min, 2), step=learner.state.step,
                         wall_s=round(time.monotonic() - wall0, 1))  # fmt: skip
            marks.append(point)
            print(f"{bucket} @ {cpu_min:.1f} CPU min: {point}", flush=True)
    stop.set()
    thread.join()
    engine.dispose()
    return {"family": family, "bucket": bucket, "marks": marks}


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        "# How fast a new skill is learned",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']['nproc']} cores "
        f"({meta['machine']['cpu']}); builtin `{meta['config']['model']}`, "
        f"{meta['config']['examples']} examples of each family at level 1 (a tenth are "
        f"probes), the learner's defaults with {meta['config']['learner']}, gate on. Minutes "
        "are CPU minutes of the learner process (one torch thread).",
        "",
        "| family | CPU min | step | base acc | served acc (gain) | newest candidate acc "
        "(gain) | served version | served alignment retention |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for m in result["marks"]:
            base = m["base"] or 0.0

            def gain(value: float | None, base: float = base) -> str:
                return "n/a" if value is None else f"{value:.3f} ({value - base:+.3f})"

            retention = m["alignment_retention"]
            lines.append(
                f"| {result['family']} | {m['cpu_minutes']:.1f} | {m['step']} | {base:.3f} | "
                f"{gain(m['served'])} | {gain(m['newest_candidate'])} | "
                f"{m['served_version'] or 'base'} | "
                f"{'n/a' if retention is None else f'{retention:.1%}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(NEW_FAMILIES))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--marks", type=float, nargs="+", default=[5.0, 15.0])
    parser.add_argument("--model", choices=["micro", "small", "tiny"], default="small")
    parser.add_argument("--examples", type=int, default=600)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="LearnerConfig fields, e.g. lr=0.003 lora_rank=16")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    learner = {"candidate_every": 100}
    learner |= {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    marks = tuple(m for m in args.marks if m <= args.minutes)
    cfg = SkillConfig(args.model, args.examples, args.minutes, marks, learner=learner)
    preset = dataclasses.replace(BuiltinConfig.preset(cfg.model), num_threads=1)
    model_dir = ensure_builtin_model(args.cache, preset, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(args.families), mp_context=context) as pool:
            futures = [pool.submit(run_family, f, cfg, model_dir, Path(tmp)) for f in args.families]
            results = [f.result() for f in futures]
    meta = {
        "command": "python bench/skill.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": dataclasses.asdict(cfg),
    }
    text = markdown(meta, results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "skill.md").write_text(text)
    (args.out / "skill.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
