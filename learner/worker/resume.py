"""What a restarted learner resumes from: the loop's state, saved beside the adapter and
the optimizer in a checkpoint (:class:`learner.training.checkpoint.CheckpointDir`), and the
teacher's snapshot row that ``GET /v1/teacher`` shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from learner.curriculum.ensemble import DifficultyScorer
from learner.curriculum.rounds import Curriculum
from learner.store.teacher import save_snapshot
from learner.training.checkpoint import CheckpointDir
from learner.worker.lease_holder import Fenced
from learner.worker.lineage import LineageState
from learner.worker.parts import LearnerParts


@dataclass
class LoopState:
    """Everything besides weights and optimizer that a resumed learner needs."""

    step: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    seen_per_bucket: dict[str, int] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    last_loss: float | None = None
    last_version: int | None = None  # the newest candidate this learner saved
    last_verdict: str | None = None
    replay: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "lineage" not in data and "last_version" in data:  # checkpoints before lineages
            known["lineage"] = {"parent": data["last_version"],
                                "trained": data.get("trained_since_promotion", [])}  # fmt: skip
        return cls(**known)

    def count(self, buckets: list[str], losses: np.ndarray, tokens: int) -> None:
        """One training step on examples of these buckets (one entry per example)."""
        self.step += 1
        self.examples_seen += len(buckets)
        self.tokens_seen += tokens
        self.last_loss = float(losses.mean())
        for bucket in buckets:
            self.seen_per_bucket[bucket] = self.seen_per_bucket.get(bucket, 0) + 1


def restore(
    checkpoints: CheckpointDir,
    parts: LearnerParts,
    curriculum: Curriculum,
    rng: np.random.Generator,
    device: torch.device,
    warmup_steps: int,
) -> LoopState | None:
    """Load the newest checkpoint into the parts; its loop state (None: there is none)."""
    trainer = parts.trainer
    restored = checkpoints.restore(trainer.model, trainer.optimizer, device)
    if restored is None:
        return None
    state = LoopState.from_dict(restored)
    trainer.fresh_steps = warmup_steps  # the optimizer's moments came back too
    rng.bit_generator.state = state.rng
    if state.replay:
        parts.replay.load_state_dict(state.replay)
    if state.teacher:
        curriculum.load_state_dict(state.teacher)
    if state.lineage:
        parts.lineage.state = LineageState(**state.lineage)
    return state


def save(
    checkpoints: CheckpointDir,
    state: LoopState,
    parts: LearnerParts,
    curriculum: Curriculum,
    rng: np.random.Generator,
    scorer: DifficultyScorer | None,
    fenced: Fenced,
) -> None:
    """Write a checkpoint of everything and the teacher's snapshot row (fenced: a learner
    that lost the lease writes no row)."""
    parts.replay.flush()
    state.replay = parts.replay.state_dict()
    state.rng = dict(rng.bit_generator.state)
    state.teacher = curriculum.state_dict()
    state.lineage = asdict(parts.lineage.state)
    checkpoints.save(parts.trainer.model, parts.trainer.optimizer, asdict(state))
    snapshot = curriculum.snapshot()
    snapshot["ensemble"] = scorer.summary if scorer is not None else None
    policy, kept = curriculum.policy.name, curriculum.config.snapshots_kept
    with fenced() as conn:
        save_snapshot(conn, state.step, policy, snapshot, kept)
