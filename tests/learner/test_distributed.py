"""Data-parallel LoRA training: two gloo processes under ``torchrun`` train the adapter that
one process trains on the same batches.

The test launches this file as a script under ``torchrun`` (2 CPU processes; the
``__main__`` block is the workers) and replays the same operations on a single-process
:class:`Trainer` here. Covered: a checkpoint restored into rank 0 only (the first step must
sync it), even and odd batches, a batch of one (rank 1's slice is empty), a version loaded
(rollback) and the base reset, and the periodic check repairing a follower whose adapter
differs from rank 0's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft.utils import get_peft_model_state_dict

from learner.config import LearnerConfig, LoraSettings
from learner.training.checkpoint import CheckpointDir
from learner.training.distributed import (
    DistributedTrainer,
    destroy,
    follow,
    init_from_env,
    launched_by_torchrun,
)
from learner.training.step import Trainer

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
CONFIG = LearnerConfig(
    lora=LoraSettings(r=4, alpha=8),
    learning_rate=1e-2,
    warmup_steps=3,
    max_length=64,
    num_threads=1,
    device="cpu",
)
Batch = tuple[list[tuple[str, str]], np.ndarray]


def make_batch(seed: int, size: int) -> Batch:
    """Additions of varied lengths (so the slices pad to other widths than the whole batch)
    with non-uniform importance weights."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(size):
        a, b = (int(x) for x in rng.integers(0, 10 ** int(rng.integers(1, 6)), size=2))
        examples.append((f"add {a} {b} =", f" {a + b}"))
    return examples, rng.uniform(0.2, 3.0, size=size)


PRE = [make_batch(100 + i, 8) for i in range(2)]  # trained before the checkpoint
# (op, argument): "step" with a batch, "save" a version, "load" a version (None: the base).
OPS: list[tuple[str, Any]] = [
    ("step", make_batch(0, 8)),
    ("step", make_batch(1, 8)),
    ("step", make_batch(2, 5)),  # odd: rank 0 gets 3 examples, rank 1 gets 2
    ("step", make_batch(3, 1)),  # rank 1's slice is empty
    ("save", "v1"),
    ("step", make_batch(4, 8)),
    ("step", make_batch(5, 6)),
    ("load", "v1"),  # a rollback: the weights of v1, a fresh optimizer
    ("step", make_batch(6, 8)),
    ("load", None),  # a reset to the base model
    ("step", make_batch(7, 7)),
    ("step", make_batch(8, 8)),
]


def run_ops(trainer: Trainer, versions: Path) -> list[dict[str, Any]]:
    """Replay OPS on ``trainer`` (a DistributedTrainer on rank 0, or a plain Trainer)."""
    steps = []
    for op, arg in OPS:
        if op == "step":
            losses, tokens = trainer.step(*arg)
            steps.append({"losses": losses.tolist(), "tokens": tokens})
        elif op == "save":
            trainer.model.save_pretrained(str(versions / arg))
        else:
            trainer.load_version(None if arg is None else versions / arg)
    return steps


def restore(trainer: Trainer, checkpoint: Path) -> None:
    """As ``Learner.setup`` does: weights and optimizer from the checkpoint, warm-up done."""
    assert CheckpointDir(checkpoint).restore(trainer.model, trainer.optimizer, CPU) is not None
    trainer.fresh_steps = trainer.config.warmup_steps


def adapter(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}


# --- the workers (this file run by torchrun) ---------------------------------------------


def worker(model_dir: Path, checkpoint: Path, out: Path) -> None:
    """Rank 0 replays OPS; rank 1 follows. Each dumps its adapter after OPS ("final") and
    after a step that must repair a deliberately changed adapter ("healed")."""
    torch.set_num_threads(1)
    context = init_from_env(CPU)
    trainer = DistributedTrainer(CONFIG, model_dir, CPU, context)
    rank = context.rank
    if context.is_leader:
        restore(trainer, checkpoint)  # rank 0 only: the first step must sync it
        steps = run_ops(trainer, out / "versions")
        (out / "steps.json").write_text(json.dumps(steps))
        context.stop_followers()  # the follower dumps its adapter, then follows again
        torch.save(adapter(trainer), out / f"rank{rank}-final.pt")
        with torch.no_grad():  # a change on rank 0 only, as if no sync had been sent
            next(p for p in trainer.model.parameters() if p.requires_grad).add_(0.01)
        trainer.check_every = 1
        trainer.step(*make_batch(9, 8))
        context.stop_followers()
    else:
        follow(trainer)
        torch.save(adapter(trainer), out / f"rank{rank}-final.pt")
        follow(trainer)
    torch.save(adapter(trainer), out / f"rank{rank}-healed.pt")
    destroy()


# --- the test ------------------------------------------------------------------------------


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The reference trainer sets torch's thread count (config.num_threads): put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def launch(model_dir: Path, checkpoint: Path, out: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    argv += [__file__, str(model_dir), str(checkpoint), str(out)]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_train_what_one_does(
    micro_model_dir: Path, tmp_path: Path, one_thread: None
) -> None:
    checkpoint, out, mine = tmp_path / "checkpoint", tmp_path / "out", tmp_path / "single"
    first = Trainer(CONFIG, micro_model_dir, CPU)
    for batch in PRE:
        first.step(*batch)
    CheckpointDir(checkpoint).save(first.model, first.optimizer, {"step": len(PRE)})
    restored = adapter(first)

    started = time.monotonic()
    launch(micro_model_dir, checkpoint, out)
    launched = time.monotonic() - started

    single = Trainer(CONFIG, micro_model_dir, CPU)
    initial = adapter(single)
    restore(single, checkpoint)
    expected = run_ops(single, mine)
    reference = adapter(single)

    # The losses (gathered in batch order) and token counts of every step.
    got = json.loads((out / "steps.json").read_text())
    assert [s["tokens"] for s in got] == [s["tokens"] for s in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g["losses"], e["losses"], rtol=1e-5, atol=1e-6)

    # The adapter: as one process trains it, and bitwise the same on both ranks.
    final = [torch.load(out / f"rank{r}-final.pt") for r in (0, 1)]
    # Float sums in another order (half-batch slices, the all_reduce) differ in the last
    # bits, and AdamW's normalisation lifts that for near-zero gradients: 1e-4 of the
    # largest weight, far below what the steps moved (> 1e-3).
    scale = max(float(v.abs().max()) for v in reference.values())
    assert max_diff(final[0], reference) <= 1e-4 * scale
    assert max_diff(final[0], final[1]) == 0.0
    # Not vacuous: the adapter moved away from both its initial and its restored weights
    # (LoRA B starts at 0), and the steps trained something.
    assert max_diff(reference, initial) > 1e-3 and max_diff(reference, restored) > 1e-3
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in reference.items())

    # The check repaired the follower: rank 0's changed weights reached it (without the
    # repair the two would differ by rank 0's change).
    healed = [torch.load(out / f"rank{r}-healed.pt") for r in (0, 1)]
    assert max_diff(healed[0], healed[1]) == 0.0
    print(f"torchrun run: {launched:.1f} s")


def test_launched_by_torchrun_reads_world_size() -> None:
    assert not launched_by_torchrun({})
    assert not launched_by_torchrun({"WORLD_SIZE": "1"})
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "1"})


if __name__ == "__main__":
    worker(*(Path(arg) for arg in sys.argv[1:4]))
