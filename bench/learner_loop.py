"""Learner overhead: tokens/s of the full learner loop against a bare peft training loop.

DESIGN section 12: the full loop's tokens/s must be at least 90% of a bare peft loop's on
the same model, batch and device. Both run in the same process: the full loop first,
recording every batch it trains on, then the bare loop twice on exactly those batches (the
two bare runs show how steady the machine was):

- full: :class:`learner.worker.Learner` on a SQLite (or PostgreSQL) database holding the
  examples in task buckets plus the alignment suite: the lease, polling, the replay
  store (prioritized draws, priority write-behind), the teacher's rounds and round-end
  evaluations, the harm watch, candidates (saved, evaluated, gated) and checkpoints, and
  the difficulty scorer thread, with the service's defaults except where noted below.
- bare: ``get_peft_model`` on the base model, AdamW, and per recorded batch: encode it as
  one padded batch, the per-example loss, backward, clip, step. Nothing else.

tokens/s = trained tokens (attention mask sum, as the learner counts them) / wall time of
the loop (model loading excluded from both). The full loop's time is also broken down by
part (training steps, batch composition, round-end evaluations, candidates, checkpoints,
the rest), which is where the gap is.

    python bench/learner_loop.py                       # builtin small (tiny architecture), CPU
    python bench/learner_loop.py --threads 2 --steps 600
    python bench/learner_loop.py --device cuda --model path/to/hf-model-dir

Results: bench/results/learner_loop.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import machine

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402

from learner.builtin.families import make_examples  # noqa: E402
from learner.builtin.model import BuiltinConfig, ensure_builtin_model  # noqa: E402
from learner.builtin.suites import ensure_alignment_suite  # noqa: E402
from learner.config import DifficultyConfig, LearnerConfig, TeacherConfig  # noqa: E402
from learner.evaluation.gate import GateConfig  # noqa: E402
from learner.model.loading import (  # noqa: E402
    load_base,
    pad_rows,
    per_example_loss,
    pick_device,
    tokenize_examples,
)
from learner.store.db import make_engine, upgrade, write_transaction  # noqa: E402
from learner.store.ingest import NewExample, ingest_batch  # noqa: E402
from learner.store.registry import list_versions  # noqa: E402
from learner.training.grouping import length_groups  # noqa: E402
from learner.training.step import GROUP_OVERHEAD_TOKENS, lora_config  # noqa: E402
from learner.worker import Learner  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
# The parts of the learner's wall time that judge rather than train.
JUDGING = ("candidates", "round-end evaluation", "placement evaluation")
BUCKETS = (("copy-l2", "copy", 2), ("reverse-l2", "reverse", 2), ("sort-l1", "sort", 1),
           ("addition-l2", "addition", 2))  # fmt: skip


@dataclass(frozen=True)
class BenchConfig:
    model: str = "small"  # a builtin preset, or a local Hugging Face model directory
    device: str = "cpu"
    steps: int = 300
    batch_size: int = 16
    threads: int = 1
    examples: int = 400  # per bucket
    candidate_every: int = 100
    checkpoint_every: int = 50
    difficulty: bool = True
    # Candidates saved at once, judged on an evaluation replica on another thread (the
    # service's LIFELONG_LEARNER__BACKGROUND_CANDIDATES); off: judged inline.
    background_candidates: bool = False
    database_url: str | None = None
    cores: int = 0  # CPU cores the process may use (0: all; os.sched_setaffinity)
    looks: int = GateConfig.looks  # blocks a candidate's probes are judged in (1: all at once)
    round_answers: str = TeacherConfig.round_answers  # "forced" or "generated"


def load_examples(n: int) -> dict[str, list[tuple[str, str]]]:
    return {b: [(e["prompt"], e["target"]) for e in make_examples(f, n, lvl, seed=1)]
            for b, f, lvl in BUCKETS}  # fmt: skip


# --- the bare loop ----------------------------------------------------------------------


Batch = list[tuple[str, str]]


def bare_loop(
    cfg: BenchConfig, model_dir: Path, batches: list[Batch], grouped: bool = False
) -> dict[str, Any]:
    """A plain peft training loop over ``batches``: tokens/s over the timed steps.

    ``grouped``: each batch split into the same length-grouped micro-batches as the
    learner's step (``learner.training.grouping``, gradients accumulated), so that the
    ratio measures the loop's overhead and not the grouping's gain."""
    config = learner_config(cfg)
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    base, tokenizer = load_base(model_dir, device)
    model = get_peft_model(base, lora_config(config, base))
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate
    )

    # The same precision and padding as the learner's step on this device.
    cuda = device.type == "cuda"
    bf16 = cuda and config.bf16 and torch.cuda.is_bf16_supported()
    tokens = 0
    start = time.perf_counter()
    max_groups = 1 if cuda or not grouped else max(1, config.length_groups)
    for batch in batches:
        rows = tokenize_examples(tokenizer, batch, config.max_length)
        lengths = [len(p) + len(t) for p, t in rows]
        optimizer.zero_grad(set_to_none=True)
        for group in length_groups(lengths, max_groups, GROUP_OVERHEAD_TOKENS):
            encoded = pad_rows([rows[i] for i in group], tokenizer.pad_token_id, 8 if cuda else 1)
            tokens += int(encoded.attention_mask.sum())
            encoded = encoded.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = per_example_loss(model, encoded)
            (losses.sum() / len(rows)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"grouped": grouped, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


# --- the full loop ----------------------------------------------------------------------


def learner_config(cfg: BenchConfig) -> LearnerConfig:
    return LearnerConfig(
        batch_size=cfg.batch_size,
        candidate_every=cfg.candidate_every,
        checkpoint_every=cfg.checkpoint_every,
        poll_seconds=0.05,
        max_steps=cfg.steps,
        device=cfg.device,
        num_threads=cfg.threads,
        background_candidates=cfg.background_candidates,
    )


class PartTimer:
    """Wall time spent inside wrapped methods, per part (nested calls count once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()  # nesting depth per thread (a background judge)

    def wrap(self, obj: Any, method: str, part: str) -> None:
        inner: Callable[..., Any] = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(part):
                return inner(*args, **kwargs)

        setattr(obj, method, timed)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1


def full_loop(cfg: BenchConfig, model_dir: Path, work: Path,
              buckets: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:  # fmt: skip
    """The learner's own loop (``Learner.tick``) for ``cfg.steps`` steps; the result's
    ``batches`` are the batches it trained on, in order."""
    url = cfg.database_url or f"sqlite:///{work / 'learner-bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    ensure_alignment_suite(engine)
    with write_transaction(engine) as conn:
        for bucket, rows in buckets.items():
            ingest_batch(conn, bucket, [NewExample(p, t) for p, t in rows])
    learner = Learner(
        engine, learner_config(cfg), work / "data", model_dir, str(model_dir),
        holder="bench-learner",
        difficulty=DifficultyConfig() if cfg.difficulty else None,
        teacher=TeacherConfig(round_answers=cfg.round_answers),
        gate=GateConfig(looks=cfg.looks),
    )  # fmt: skip
    stop = threading.Event()
    assert learner.wait_for_lease(stop)
    learner.setup()
    learner.lease.keep(force=True)
    learner.start_scorer()
    batches: list[Batch] = []
    step = learner.parts.trainer.step

    def recording_step(examples: Batch, weights: np.ndarray, distill: Any = None) -> Any:
        batches.append(list(examples))  # the bare loop replays these without the KL term
        return step(examples, weights, distill=distill)

    learner.parts.trainer.step = recording_step  # type: ignore[method-assign]
    timer = PartTimer()
    timer.wrap(learner.parts.trainer, "step", "train step")
    timer.wrap(learner.parts.batches, "batch", "batch composition")
    timer.wrap(learner.parts.rounds, "end_round", "round-end evaluation")
    timer.wrap(learner.parts.rounds, "place", "placement evaluation")
    # Inline, the whole candidate; in the background, what the training thread still
    # spends on it (save, hand-over, taking in the verdict): the judging runs on the
    # replica's thread.
    timer.wrap(learner, "start_candidate", "candidates")
    timer.wrap(learner, "collect_candidate", "candidates")
    timer.wrap(learner, "save_checkpoint", "checkpoints")
    timer.wrap(learner, "poll", "polling")
    # Inside the judging parts (on whichever thread they run): what the time went on.
    detail = PartTimer()
    detail.wrap(learner.parts.candidates, "save", "candidate files (save)")
    detail.wrap(learner.parts.candidates, "_answer_current", "candidate and reference answers")
    detail.wrap(learner.parts.rounds, "evaluate", "round-end and placement probes")
    detail.wrap(learner.parts.rounds, "_watched_rate", "harm watch")
    idle = 0.0
    start = time.perf_counter()
    try:
        while learner.state.step < cfg.steps:
            if not learner.tick():
                t = time.perf_counter()
                stop.wait(learner.config.poll_seconds)
                idle += time.perf_counter() - t
        wall = time.perf_counter() - start
    finally:
        learner.stop_scorer()
        learner.parts.close()
        learner.lease.release()
        engine.dispose()
    parts = {k: round(v, 3) for k, v in timer.seconds.items()}
    parts["idle (teacher resting)"] = round(idle, 3)
    parts["other"] = round(wall - sum(timer.seconds.values()) - idle, 3)
    tokens = learner.state.tokens_seen
    judging = sum(parts.get(k, 0.0) for k in JUDGING)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "parts_s": parts,
            "judging_share": judging / wall,
            "judging_detail_s": {k: round(v, 3) for k, v in detail.seconds.items()},
            "calls": dict(timer.calls), "verdicts": verdicts(engine_url=url),
            "last_verdict": learner.state.last_verdict, "batches": batches}  # fmt: skip


def verdicts(engine_url: str) -> dict[str, int]:
    """How many candidates got each verdict."""
    engine = make_engine(engine_url)
    try:
        with engine.connect() as conn:
            rows = list_versions(conn)
    finally:
        engine.dispose()
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[str((row.gate_report or {}).get("verdict", row.status))] += 1
    return dict(counts)


# --- report -----------------------------------------------------------------------------


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "learner_loop.json").write_text(json.dumps(report, indent=2))
    full, bare = report["full"], report["bare"]
    lines = [
        "# Learner overhead: the full loop against a bare peft loop",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- config: {report['config']}",
        "",
        "| loop | tokens | wall s | tokens/s |",
        "|---|---:|---:|---:|",
    ]
    for i, run in enumerate(bare):
        kind = "grouped" if run["grouped"] else "one padded batch"
        lines.append(f"| bare peft, {kind} (run {i + 1}) | {run['tokens']:,} | "
                     f"{run['wall_s']:.1f} | {run['tokens_per_s']:,.0f} |")  # fmt: skip
    lines.append(f"| full learner loop | {full['tokens']:,} | {full['wall_s']:.1f} | "
                 f"{full['tokens_per_s']:,.0f} |")  # fmt: skip
    lines += [
        "",
        f"**full / grouped bare = {report['ratio']:.2f}** (target >= 0.90; the bare loop "
        "split into the same length-grouped micro-batches as the learner's step); "
        f"full / plain bare = {report['ratio_plain']:.2f}. Bare: mean of its two runs.",
        "",
        f"**Judging share = {full['judging_share']:.1%}** of the learner's wall time "
        "(candidates, round-end and placement evaluations on the training thread; target "
        f"<= 10%). Candidate verdicts: {full['verdicts']}.",
        "",
        "Where the full loop's wall time went (s):",
        "",
        "| part | s | share |",
        "|---|---:|---:|",
    ]
    for part, seconds in sorted(full["parts_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {seconds:.1f} | {seconds / full['wall_s']:.0%} |")
    lines += ["", "Inside the judging (s; in the background, on the judge's thread):", "",
              "| what | s |", "|---|---:|"]  # fmt: skip
    for part, seconds in sorted(full["judging_detail_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {seconds:.1f} |")
    (out / "learner_loop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = BenchConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value) if value is not None else str,
                                default=value)  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    cfg = replace(defaults, **{k: getattr(args, k) for k in asdict(defaults)})
    if cfg.cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: cfg.cores])
    torch.set_num_threads(cfg.threads)
    if Path(cfg.model).is_dir():
        model_dir = Path(cfg.model)
    else:
        preset = replace(BuiltinConfig.preset(cfg.model), num_threads=cfg.threads)
        model_dir = ensure_builtin_model(args.cache, preset, progress=False)
    buckets = load_examples(cfg.examples)
    with tempfile.TemporaryDirectory() as tmp:
        full = full_loop(cfg, model_dir, Path(tmp), buckets)
    batches = full.pop("batches")
    # Alternating, so that a drift of the machine's speed hits both kinds alike.
    bare = [bare_loop(cfg, model_dir, batches, grouped=g) for g in (True, False, True, False)]
    grouped = float(np.mean([b["tokens_per_s"] for b in bare if b["grouped"]]))
    plain = float(np.mean([b["tokens_per_s"] for b in bare if not b["grouped"]]))
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(
            ["python bench/learner_loop.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": asdict(cfg),
        "bare": bare,
        "full": full,
        "ratio": full["tokens_per_s"] / grouped,  # against the grouped bare loop
        "ratio_plain": full["tokens_per_s"] / plain,
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
