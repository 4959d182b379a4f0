"""The parts a learner builds once it holds the training lease (the model is loaded here),
made in one place so that the loop never holds a half-built learner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine

from learner.config import LearnerConfig
from learner.curriculum.rounds import Curriculum
from learner.evaluation.gate import GateConfig
from learner.evaluation.refusal import make_detector
from learner.replay import ReplayConfig, ReplayStore
from learner.training.batches import BatchSource
from learner.training.replica import EvalReplica
from learner.training.step import Trainer
from learner.worker.candidates import CandidateMaker
from learner.worker.lease_holder import Fenced
from learner.worker.lineage import Lineage
from learner.worker.rounds import RoundKeeper

#: What trains: a Trainer, or for example a DistributedTrainer under torchrun.
TrainerFactory = Callable[[LearnerConfig, Path, torch.device], Trainer]


@dataclass
class LearnerParts:
    """A set-up learner: the trainer, its replay store (the index rebuilt from SQL), the
    batch source, the lineage, the candidate maker and the teacher's round keeper."""

    trainer: Trainer
    replay: ReplayStore
    batches: BatchSource
    lineage: Lineage
    candidates: CandidateMaker
    rounds: RoundKeeper

    def close(self) -> None:
        """Wait for a background judge; flush the replay store's pending priorities."""
        self.candidates.close()
        self.replay.close()


@dataclass(frozen=True)
class PartsSpec:
    """What the parts are built from (the learner's configuration and shared objects)."""

    engine: Engine
    config: LearnerConfig
    data_dir: Path
    model_dir: Path
    device: torch.device
    replay: ReplayConfig
    gate: GateConfig
    trainer_factory: TrainerFactory = Trainer


def build_parts(
    spec: PartsSpec, curriculum: Curriculum, rng: np.random.Generator, fenced: Fenced
) -> LearnerParts:
    """Load the model and build every part around it."""
    config, gate = spec.config, spec.gate
    trainer = spec.trainer_factory(config, spec.model_dir, spec.device)
    replay = ReplayStore(spec.engine, spec.replay)
    # Candidates are judged on a replica while training goes on, or on the trained model.
    replica = (
        EvalReplica(spec.model_dir, spec.device, trainer.lora)
        if config.background_candidates
        else None
    )
    is_refusal = make_detector(gate.refusal, gate.refusals, str(spec.device))
    candidates = CandidateMaker(
        spec.engine, trainer, fenced, spec.data_dir, gate, config.max_new_tokens, replica,
        is_refusal,
    )  # fmt: skip
    return LearnerParts(
        trainer=trainer,
        replay=replay,
        batches=BatchSource(replay, config, rng),
        lineage=Lineage(trainer, spec.data_dir, fenced, gate.reset_after_rejections),
        candidates=candidates,
        rounds=RoundKeeper(spec.engine, curriculum, trainer, fenced, is_refusal),
    )
