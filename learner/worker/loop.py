"""The learner worker: a thin loop that wires its parts together.

One tick (:meth:`Learner.tick`)::

    keep the lease -> read control commands, the bucket catalog and new examples
    (BatchSource) -> follow registry events made by others (Lineage: a rollback loads the
    version rolled back to) -> the teacher's round focus (Curriculum) -> a mixed batch ->
    one LoRA step (Trainer, per-example losses) -> losses become replay priorities
    -> at a round's end, the focus bucket's probes feed the teacher
    -> every `candidate_every` steps a candidate (CandidateMaker: save, evaluate, gate,
       record), then the lineage moves on (or resets after repeated rejections)
    -> every `checkpoint_every` steps a checkpoint

The database is the only channel to the server. A killed worker restarts from its newest
checkpoint (step, optimizer, sampling RNG, replay index, teacher and lineage state, and
the adapter weights).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import Engine

from learner.checkpoint import CheckpointDir
from learner.config import DifficultyConfig, LearnerConfig, TeacherConfig
from learner.curriculum import Curriculum
from learner.difficulty import DifficultyScorer, EnsembleContext, start_scorer
from learner.evaluation.gate import GateConfig
from learner.modeling import pick_device
from learner.replay import ReplayConfig, ReplayStore
from learner.store import control
from learner.store.db import write_transaction
from learner.store.difficulty import bucket_difficulties
from learner.store.teacher import save_snapshot
from learner.training.batches import BatchSource
from learner.training.replica import EvalReplica
from learner.training.step import Trainer
from learner.worker.candidates import CandidateMaker, CandidateOutcome
from learner.worker.lease_holder import LeaseHolder, LeaseLost
from learner.worker.lineage import Lineage, LineageState
from learner.worker.rounds import RoundKeeper

log = logging.getLogger(__name__)
TrainerFactory = Callable[[LearnerConfig, Path, torch.device], Trainer]


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


class Learner:
    """A learner worker bound to one database and one data directory."""

    def __init__(
        self,
        engine: Engine,
        config: LearnerConfig,
        data_dir: Path,
        model_dir: Path,
        base_model: str,
        holder: str | None = None,
        replay: ReplayConfig | None = None,
        teacher: TeacherConfig | None = None,
        difficulty: DifficultyConfig | None = None,
        gate: GateConfig | None = None,
        trainer_factory: TrainerFactory | None = None,
    ) -> None:
        self.engine = engine
        # What trains: a Trainer, or for example a DistributedTrainer under torchrun.
        self.trainer_factory: TrainerFactory = trainer_factory or Trainer
        self.config = config
        self.data_dir = data_dir.resolve()
        self.model_dir = model_dir
        self.base_model = base_model
        self.device = pick_device(config.device)
        self.checkpoints = CheckpointDir(data_dir / "learner" / "checkpoints")
        self.replay_config = replay or ReplayConfig(seed=config.seed)
        self.gate_config = gate or GateConfig()
        self.curriculum = Curriculum(teacher or TeacherConfig(), config.seed)
        self.difficulty_config = difficulty  # None: no ensemble scoring
        self.scorer: DifficultyScorer | None = None
        self.state = LoopState()
        self.rng = np.random.default_rng(config.seed)
        self.paused = False
        self._checkpointed_step = -1
        self.replica: EvalReplica | None = None
        self._judge_pool: ThreadPoolExecutor | None = None  # made at the first candidate
        self._judging: Future[CandidateOutcome] | None = None
        holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = LeaseHolder(engine, holder, config.lease_seconds, self.status)

    @property
    def holder(self) -> str:
        return self.lease.holder

    # --- setup -------------------------------------------------------------------------

    def wait_for_lease(self, stop: threading.Event) -> bool:
        return self.lease.wait(stop)

    def setup(self) -> None:
        """Load the model, rebuild the replay index, restore the newest checkpoint."""
        self.trainer = self.trainer_factory(self.config, self.model_dir, self.device)
        old_store: ReplayStore | None = getattr(self, "store", None)
        if old_store is not None:
            old_store.close()  # set up again: stop the old store's write-behind thread
        # The replay index is rebuilt from SQL; priorities flushed before a crash survive it.
        self.store = ReplayStore(self.engine, self.replay_config)
        self.batches = BatchSource(self.store, self.config, self.rng)
        self.lineage = Lineage(
            self.trainer, self.data_dir, self.lease.fenced, self.gate_config.reset_after_rejections
        )
        self.replica = (
            EvalReplica(self.model_dir, self.device, self.trainer.lora)
            if self.config.background_candidates
            else None
        )
        self.candidates = CandidateMaker(
            self.engine,
            self.trainer,
            self.lease.fenced,
            self.data_dir,
            self.gate_config,
            self.config.max_new_tokens,
            self.replica,
        )
        self.rounds = RoundKeeper(
            self.engine,
            self.curriculum,
            self.trainer,
            self.lease.fenced,
            self.gate_config.is_refusal,
        )
        restored = self.checkpoints.restore(self.model, self.trainer.optimizer, self.device)
        if restored is not None:
            self.state = LoopState.from_dict(restored)
            self.trainer.fresh_steps = self.config.warmup_steps  # its moments came back too
            self._checkpointed_step = self.state.step
            self.rng.bit_generator.state = self.state.rng
            if self.state.replay:
                self.store.load_state_dict(self.state.replay)
            if self.state.teacher:
                self.curriculum.load_state_dict(self.state.teacher)
            if self.state.lineage:
                self.lineage.state = LineageState(**self.state.lineage)
            log.info("resumed from checkpoint at step %d", self.state.step)
        for arm in self.curriculum.harm.quarantined:
            self.store.exclude_bucket(arm)
        self.candidates.recover()

    @property
    def model(self) -> Any:
        return self.trainer.model

    @property
    def tokenizer(self) -> Any:
        return self.trainer.tokenizer

    @property
    def buckets(self) -> dict[str, Any]:
        return self.batches.buckets

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Train until ``stop`` is set or ``max_steps`` is reached."""
        stop = stop or threading.Event()
        if not self.wait_for_lease(stop):
            return
        self.setup()
        self.lease.keep(force=True)
        self.start_scorer()
        try:
            while not stop.is_set():
                if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
                    break
                if not self.tick():
                    stop.wait(self.config.poll_seconds)
            self.collect_candidate(wait=True)  # its verdict belongs to this run
            self.save_checkpoint()
        except LeaseLost:
            # Another learner owns the checkpoints now: write nothing more, just stop.
            log.warning("lost the training lease; stopping without a checkpoint")
            return
        finally:
            self.stop_scorer()
            if self._judge_pool is not None:
                self._judge_pool.shutdown(wait=True)
                self._judge_pool = None
            self.store.close()  # flushes the pending priority updates
        self.lease.release()

    def poll(self) -> None:
        """Control commands, the bucket catalog, new examples and registry events."""
        # Reads only: on SQLite a write transaction per step would hold up ingestion.
        with self.engine.connect() as conn:
            pending = control.has_pending(conn)
            self.paused = control.is_paused(conn)
            self.batches.poll(conn)
            if self.lineage.follow(conn):
                self.curriculum.weights_replaced("the weights followed the registry")
        if pending:
            with write_transaction(self.engine) as conn:
                control.acknowledge_pending(conn, "applied")

    def tick(self) -> bool:
        """One step; returns False when there was nothing to do (the caller waits)."""
        self.lease.keep()
        self.collect_candidate(wait=False)
        self.poll()
        self._end_quarantines()
        arms = self.curriculum.allowed(self.batches.focus_arms())
        if self.paused or not arms:
            return False
        sizes = self.store.bucket_sizes()
        focus = self.rounds.focus(arms, self.batches.buckets, self.state.step, self.scorer, sizes)
        if focus is None:  # the teacher rests: no learnable arm now
            self.save_checkpoint()  # what was trained so far, and the teacher's state
            return False
        batch = self.batches.batch(focus)
        pairs = [(e.prompt, e.target) for e in batch.examples]
        losses, tokens = self.trainer.step(pairs, batch.weights, distill=batch.anchor)
        self.store.update_priorities(batch.ids, losses)
        self._count(batch.examples, losses, tokens)
        self.lineage.trained_on(self.batches.buckets[focus].id)
        in_focus = np.array([e.bucket == focus for e in batch.examples])
        self.curriculum.record_loss(float(losses[in_focus].mean()))
        if self.curriculum.round_complete():
            quarantined = self.rounds.end_round(self.state.step, self.lease.keep)
            if quarantined is not None:
                self.store.exclude_bucket(quarantined)
                self.save_checkpoint()  # the quarantine is in the teacher's saved state
        if self.state.step % self.config.candidate_every == 0:
            if self.replica is not None:
                self.start_candidate()
            else:
                self.make_candidate()
            self.save_checkpoint()
        elif self.state.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        return True

    def _end_quarantines(self) -> None:
        """Quarantines whose term is over: the buckets train and replay again, on probation."""
        released = self.curriculum.release_quarantine(time.time())
        for arm in released:
            self.store.include_bucket(arm)
            log.warning("bucket %s released from quarantine on probation", arm)
        if released:
            self.save_checkpoint()

    def _count(self, examples: list[Any], losses: np.ndarray, tokens: int) -> None:
        st = self.state
        st.step += 1
        st.examples_seen += len(examples)
        st.tokens_seen += tokens
        st.last_loss = float(losses.mean())
        for example in examples:
            st.seen_per_bucket[example.bucket] = st.seen_per_bucket.get(example.bucket, 0) + 1

    # --- candidates ----------------------------------------------------------------------

    def provenance(self) -> dict[str, Any]:
        st = self.state
        return {
            "base_model": self.base_model,
            "base_model_dir": str(self.model_dir),
            "train_step": st.step,
            "examples_seen": st.examples_seen,
            "tokens_seen": st.tokens_seen,
            "data_seen": dict(st.seen_per_bucket),
            "lora": _json_safe_lora(self.trainer.lora.to_dict()),
            "learner": self.config.to_dict(),
            "replay": asdict(self.replay_config),
            "gate": asdict(self.gate_config),
            "teacher_policy": self.curriculum.policy.name,
        }

    def make_candidate(self) -> CandidateOutcome:
        """Save, evaluate and gate a candidate now (training waits); move the lineage on;
        tell the teacher."""
        self.collect_candidate(wait=True)
        self.lease.keep(force=True)
        lineage = self.lineage.state
        self.lineage.saved()
        outcome = self.candidates.make(
            lineage.parent, self.state.step, list(lineage.trained), self.provenance()
        )
        self.state.last_version = outcome.version
        self._after_candidate(outcome)
        return outcome

    def start_candidate(self) -> None:
        """Save a candidate and have it judged on the replica in the background; the
        outcome is taken in by :meth:`collect_candidate`. One at a time: a previous
        candidate still being judged is waited for first."""
        self.collect_candidate(wait=True)
        self.lease.keep(force=True)
        lineage = self.lineage.state
        version = self.candidates.save(lineage.parent, self.state.step, self.provenance())
        self.lineage.saved()
        self.state.last_version = version
        trained = list(lineage.trained)
        if self._judge_pool is None:
            self._judge_pool = ThreadPoolExecutor(1, thread_name_prefix="candidate-judge")
        self._judging = self._judge_pool.submit(
            self.candidates.judge, version, self.state.step, trained
        )

    def collect_candidate(self, wait: bool) -> CandidateOutcome | None:
        """Take in the background candidate's outcome once it is ready (``wait``: block
        until then). Its errors surface here, on the training thread (LeaseLost too)."""
        judging = self._judging
        if judging is None or not (wait or judging.done()):
            return None
        self._judging = None
        outcome = judging.result()
        self._after_candidate(outcome)
        self.save_checkpoint(force=True)  # the lineage moved: a restart must know it
        return outcome

    def _after_candidate(self, outcome: CandidateOutcome) -> None:
        self.state.last_verdict = outcome.verdict
        self.rounds.observe_reevaluation(outcome, self.batches.buckets)
        replaced = self.lineage.after_candidate(outcome)
        if replaced:
            self.curriculum.weights_replaced(replaced)

    # --- the teacher's difficulty scorer -------------------------------------------------

    def start_scorer(self) -> None:
        """Score examples with the difficulty ensemble in a background thread."""
        if self.difficulty_config is not None:
            context = EnsembleContext(
                self.base_model, self.model_dir, self.device, self.config.max_length
            )
            self.scorer = start_scorer(self.engine, self.difficulty_config, context)

    def stop_scorer(self) -> None:
        if self.scorer is not None:
            self.scorer.stop()

    def refresh_difficulty(self) -> None:
        with self.engine.connect() as conn:
            fitted = bucket_difficulties(conn)
        self.rounds.set_difficulties(fitted, self.batches.buckets)

    # --- status and checkpoints ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/learner`` shows (stored in the lease row)."""
        trainer = getattr(self, "trainer", None)
        lineage = getattr(self, "lineage", None)
        return {
            "step": self.state.step,
            "paused": self.paused,
            "examples_seen": self.state.examples_seen,
            "tokens_seen": self.state.tokens_seen,
            "last_loss": self.state.last_loss,
            "last_version": self.state.last_version,
            "last_verdict": self.state.last_verdict,
            "parent_version": None if lineage is None else lineage.state.parent,
            "consecutive_rejections": 0 if lineage is None else lineage.state.rejections,
            "tokens_per_second": 0.0 if trainer is None else round(trainer.tokens_per_second, 1),
            "buckets": len(self.batches.buckets) if hasattr(self, "batches") else 0,
            "train_examples": len(self.store) if hasattr(self, "store") else 0,
            "base_model": self.base_model,
            "device": str(self.device),
            "teacher": {
                "policy": self.curriculum.policy.name,
                "focus": None if self.curriculum.current is None else self.curriculum.current.arm,
                "resting": None if self.curriculum.rest is None else self.curriculum.rest.reason,
                "learner_ability": self.curriculum.ability,
            },
        }

    def save_checkpoint(self, force: bool = False) -> None:
        """Checkpoint unless nothing was trained since the last one (``force``: unless
        nothing was trained at all)."""
        if self.state.step == 0 or (self.state.step == self._checkpointed_step and not force):
            return  # nothing new to save
        self._checkpointed_step = self.state.step
        self.store.flush()
        self.state.replay = self.store.state_dict()
        self.state.rng = dict(self.rng.bit_generator.state)
        self.state.teacher = self.curriculum.state_dict()
        self.state.lineage = asdict(self.lineage.state)
        self.checkpoints.save(self.model, self.trainer.optimizer, asdict(self.state))
        snapshot = self.curriculum.snapshot()
        snapshot["ensemble"] = self.scorer.summary if self.scorer is not None else None
        with self.lease.fenced() as conn:
            save_snapshot(
                conn,
                self.state.step,
                self.curriculum.policy.name,
                snapshot,
                self.curriculum.config.snapshots_kept,
            )


def _json_safe_lora(lora: dict[str, Any]) -> dict[str, Any]:
    """peft's ``LoraConfig.to_dict`` holds listed target modules as a set: sorted here."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in lora.items()}
