"""One learner's configuration, parts and saved state (the loop itself is
:mod:`learner.worker.loop`): set up once the lease is held (:mod:`learner.worker.parts`),
checkpoints (:mod:`learner.worker.resume`), candidates, the difficulty scorer, status."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from learner.config import DifficultyConfig, LearnerConfig, RetentionConfig, TeacherConfig
from learner.curriculum.ensemble import DifficultyScorer, EnsembleContext, start_scorer
from learner.curriculum.rounds import Curriculum
from learner.evaluation.gate import GateConfig
from learner.fsutil import is_no_space
from learner.model.loading import pick_device
from learner.replay import ReplayConfig
from learner.training.checkpoint import CheckpointDir
from learner.training.step import Trainer
from learner.worker import report, resume
from learner.worker.candidates import CandidateOutcome, NoSpaceLeft
from learner.worker.housekeeping import Housekeeper
from learner.worker.lease_holder import LeaseHolder
from learner.worker.parts import LearnerParts, PartsSpec, TrainerFactory, build_parts

log = logging.getLogger(__name__)


class LearnerSession:
    """A learner bound to one database and one data directory, before and after setup."""

    def __init__(self, engine: Engine, config: LearnerConfig, data_dir: Path, model_dir: Path,
                 base_model: str, holder: str | None = None, replay: ReplayConfig | None = None,
                 teacher: TeacherConfig | None = None, difficulty: DifficultyConfig | None = None,
                 gate: GateConfig | None = None, trainer_factory: TrainerFactory | None = None,
                 retention: RetentionConfig | None = None) -> None:  # fmt: skip
        self.engine, self.config, self.base_model = engine, config, base_model
        self.data_dir, self.device = data_dir.resolve(), pick_device(config.device)
        self.spec = PartsSpec(engine, config, self.data_dir, model_dir, self.device,
                              replay or ReplayConfig(seed=config.seed), gate or GateConfig(),
                              trainer_factory or Trainer)  # fmt: skip
        retention = retention or RetentionConfig()
        self.checkpoints = CheckpointDir(
            data_dir / "learner" / "checkpoints", retention.keep_checkpoints
        )
        self.curriculum = Curriculum(teacher or TeacherConfig(), config.seed)
        self.difficulty_config = difficulty  # None: no ensemble scoring
        self.scorer: DifficultyScorer | None = None
        self.state, self.rng = resume.LoopState(), np.random.default_rng(config.seed)
        self.paused, self._checkpointed_step = False, -1
        self._parts: LearnerParts | None = None
        holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = LeaseHolder(engine, holder, config.lease_seconds, self.status)
        self.housekeeper = Housekeeper(self.lease.fenced, retention)

    @property
    def parts(self) -> LearnerParts:
        if self._parts is None:
            raise RuntimeError("the learner is not set up: call setup() first")
        return self._parts

    def wait_for_lease(self, stop: threading.Event) -> bool:
        return self.lease.wait(stop)

    def setup(self) -> None:
        """Load the model, rebuild the replay index, restore the newest checkpoint."""
        if self._parts is not None:
            self._parts.close()  # set up again: stop the old store's write-behind thread
        self._parts = build_parts(self.spec, self.curriculum, self.rng, self.lease.fenced)
        restored = resume.restore(self.checkpoints, self.parts, self.curriculum, self.rng,
                                  self.device, self.config.warmup_steps)  # fmt: skip
        if restored is not None:
            self.state, self._checkpointed_step = restored, restored.step
            log.info("resumed from checkpoint at step %d", restored.step)
        for arm in self.curriculum.harm.quarantined:
            self.parts.replay.exclude_bucket(arm)
        self.parts.candidates.recover()

    def start_candidate(self) -> None:
        """Save a candidate from the current weights, judged in the background on the
        replica or here and now without one; :meth:`collect_candidate` takes it in."""
        self.collect_candidate(wait=True)  # one at a time
        self.lease.keep(force=True)
        lineage, policy = self.parts.lineage, self.curriculum.policy.name
        provenance = report.candidate_provenance(self.spec, self.parts, self.state,
                                                 self.base_model, policy)  # fmt: skip
        try:
            self.state.last_version = self.parts.candidates.start(
                lineage.state.parent, self.state.step, list(lineage.state.trained), provenance
            )
        except NoSpaceLeft as exc:  # training goes on; the next candidate tries again
            log.error("%s; training goes on", exc)
            return
        lineage.saved()
        self.collect_candidate(wait=self.parts.candidates.replica is None)

    def collect_candidate(self, wait: bool) -> CandidateOutcome | None:
        """Take in a judged candidate (``wait``: block until it is): the teacher and the
        lineage learn of its verdict, and a checkpoint records where that left us."""
        if (outcome := self.parts.candidates.collect(wait)) is None:
            return None
        self.state.last_verdict = outcome.verdict
        self.parts.rounds.observe_reevaluation(outcome, self.parts.batches.buckets)
        if replaced := self.parts.lineage.after_candidate(outcome):
            self.curriculum.weights_replaced(replaced)
        self.save_checkpoint(force=True)  # the lineage moved: a restart must know it
        return outcome

    def start_scorer(self) -> None:
        """Score examples with the difficulty ensemble in a background thread."""
        if self.difficulty_config is not None:
            context = EnsembleContext(self.base_model, self.spec.model_dir, self.device,
                                      self.config.max_length)  # fmt: skip
            self.scorer = start_scorer(self.engine, self.difficulty_config, context)

    def stop_scorer(self) -> None:
        if self.scorer is not None:
            self.scorer.stop()

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/learner`` shows (stored in the lease row)."""
        return report.learner_status(self.state, self._parts, self.curriculum, self.paused,
                                     self.base_model, str(self.device))  # fmt: skip

    def save_checkpoint(self, force: bool = False) -> None:
        """Checkpoint unless nothing was trained since the last one (``force``: unless
        nothing was trained at all)."""
        if self.state.step == 0 or (self.state.step == self._checkpointed_step and not force):
            return  # nothing new to save
        try:
            resume.save(self.checkpoints, self.state, self.parts, self.curriculum, self.rng,
                        self.scorer, self.lease.fenced)  # fmt: skip
        except Exception as exc:
            if not is_no_space(exc):
                raise
            # The previous checkpoint stays whole (written atomically); the next try may
            # find space again.
            log.error("checkpoint at step %d not written: %s", self.state.step, exc)
            return
        self._checkpointed_step = self.state.step
