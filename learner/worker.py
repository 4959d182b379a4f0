"""The learner worker: lease, poll, train a LoRA adapter, evaluate, version, promote.

One round of the loop (``Learner.tick``)::

    heartbeat the lease -> apply control commands -> poll new examples -> the teacher
    picks the round's focus bucket -> sample a batch -> one LoRA step -> at the end of a
    round, evaluate the focus bucket's probes and feed the progress to the teacher
    -> every `checkpoint_every` steps a checkpoint
    -> every `candidate_every` steps a candidate version, evaluated on the probes of the
       buckets trained since the active version, promoted if it raises their mean accuracy

Meanwhile a background thread scores new examples with the difficulty ensemble
(:mod:`learner.difficulty`). The database is the only channel to the server. A killed
worker restarts from its newest checkpoint (step counter, optimizer, sampling RNG, replay
index, teacher state and the adapter weights all restored).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from sqlalchemy import Connection, Engine

from learner import control, lease, registry
from learner.checkpoint import CheckpointDir
from learner.config import DifficultyConfig, LearnerConfig, TeacherConfig
from learner.curriculum import Curriculum
from learner.difficulty import DifficultyScorer, EnsembleContext, start_scorer
from learner.evaluation import (
    ProbeSet,
    answers_correct,
    load_probe_sets,
    store_score,
    stored_score,
)
from learner.fsutil import write_dir_atomically
from learner.mixing import BucketInfo, MixedBatch, bucket_catalog, compose_batch
from learner.modeling import encode_examples, load_base, per_example_loss, pick_device
from learner.promotion import promotion_report
from learner.replay import ReplayConfig, ReplayStore
from learner.store.db import write_transaction
from learner.store.difficulty import bucket_difficulties, item_parameters
from learner.store.teacher import record_decision, save_snapshot

log = logging.getLogger(__name__)
Evaluator = Callable[[ProbeSet], float]


class LeaseLost(RuntimeError):
    """Another learner took the training lease over; this one must stop."""


@dataclass
class LoopState:
    """Everything besides weights and optimizer that a resumed learner needs."""

    step: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    last_version: int | None = None
    trained_since_promotion: list[int] = field(default_factory=list)
    seen_per_bucket: dict[str, int] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    last_loss: float | None = None
    replay: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)


def lora_config(config: LearnerConfig) -> LoraConfig:
    lora = config.lora
    targets = lora.target_modules
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


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
    ) -> None:
        self.engine = engine
        self.config = config
        self.data_dir = data_dir.resolve()  # stored version paths must not be relative
        self.model_dir = model_dir
        self.base_model = base_model
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.device = pick_device(config.device)
        self.checkpoints = CheckpointDir(data_dir / "learner" / "checkpoints")
        self.replay_config = replay or ReplayConfig(seed=config.seed)
        self.curriculum = Curriculum(teacher or TeacherConfig(), config.seed)
        self.difficulty_config = difficulty  # None: no ensemble scoring
        self.scorer: DifficultyScorer | None = None
        self._difficulty_fits: int | None = None  # the scorer's fit count last read
        self.buckets: dict[str, BucketInfo] = {}
        self.state = LoopState()
        self.rng = np.random.default_rng(config.seed)
        self.paused = False
        self._last_heartbeat = 0.0
        self._tokens_per_second = 0.0
        self._checkpointed_step = -1

    # --- setup -------------------------------------------------------------------------

    def wait_for_lease(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if lease.try_acquire(self.engine, self.holder, self.config.lease_seconds):
                self._last_heartbeat = time.monotonic()
                return True
            log.info("training lease is held by another learner; waiting")
            stop.wait(min(self.config.lease_seconds / 3, 2.0))
        return False

    def setup(self) -> None:
        torch.set_num_threads(self.config.num_threads or max(1, len(os.sched_getaffinity(0)) - 1))
        torch.manual_seed(self.config.seed)
        base, self.tokenizer = load_base(self.model_dir, self.device)
        self.model: PeftModel = get_peft_model(base, lora_config(self.config))
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        # The replay index is rebuilt from SQL; priorities flushed before a crash survive it.
        old_store: ReplayStore | None = getattr(self, "store", None)
        if old_store is not None:
            old_store.close()  # set up again: stop the old store's write-behind thread
        self.store = ReplayStore(self.engine, self.replay_config)
        restored = self.checkpoints.restore(self.model, self.optimizer, self.device)
        if restored is not None:
            self.state = LoopState(**restored)
            self._checkpointed_step = self.state.step
            self.rng.bit_generator.state = self.state.rng
            if self.state.replay:
                self.store.load_state_dict(self.state.replay)
            if self.state.teacher:
                self.curriculum.load_state_dict(self.state.teacher)
            log.info("resumed from checkpoint at step %d", self.state.step)
        self.model.train()

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Train until ``stop`` is set or ``max_steps`` is reached."""
        stop = stop or threading.Event()
        if not self.wait_for_lease(stop):
            return
        self.setup()
        self.keep_lease(force=True)
        self.start_scorer()
        try:
            while not stop.is_set():
                if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
                    break
                if not self.tick():
                    stop.wait(self.config.poll_seconds)
            self.save_checkpoint()
        except LeaseLost:
            # Another learner owns the checkpoints now: write nothing more, just stop.
            log.warning("lost the training lease; stopping without a checkpoint")
            return
        finally:
            self.stop_scorer()
            self.store.close()  # flushes the pending priority updates
        lease.release(self.engine, self.holder)

    def tick(self) -> bool:
        """One round; returns False when there was nothing to do (the caller waits)."""
        self.keep_lease()
        # Reads only: on SQLite a write transaction per step would hold up ingestion.
        with self.engine.connect() as conn:
            pending = control.has_pending(conn)
            self.paused = control.is_paused(conn)
            self.buckets = bucket_catalog(conn)
        if pending:
            with write_transaction(self.engine) as conn:
                control.acknowledge_pending(conn, "applied")
        buckets = self.trainable_buckets()
        if self.paused or not buckets:
            return False
        focus = self.round_focus(buckets)
        anchors = [b for b in buckets if self.buckets[b].kind == "alignment" and b != focus]
        batch = compose_batch(
            self.store,
            self.rng,
            focus,
            anchors,
            self.config.batch_size,
            self.config.focus_share,
            self.config.anchor_share,
        )
        losses = self.train_step(self.buckets[focus], batch)
        in_focus = [e.bucket == focus for e in batch.examples]
        self.curriculum.record_loss(float(losses[in_focus].mean()))
        if self.curriculum.round_complete():
            self.end_round()
        if self.state.step % self.config.candidate_every == 0:
            self.make_candidate()
            self.save_checkpoint()
        elif self.state.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        return True

    # --- the teacher ---------------------------------------------------------------------

    def round_focus(self, arms: list[str]) -> str:
        """The focus bucket: the running round's, or a new decision of the teacher."""
        if self.curriculum.needs_decision(arms):
            # Bucket difficulties change only with a refit: re-read them after one (and
            # once at start, for fits stored by an earlier run); a new bucket's items are
            # fitted, and so read, at the scorer's next refit.
            fits = self.scorer.fits if self.scorer is not None else 0
            if fits != self._difficulty_fits:
                self.refresh_difficulty()
                self._difficulty_fits = fits
            ids = {a: self.buckets[a].id for a in arms}
            return self.curriculum.decide(arms, ids, self.state.step).arm
        assert self.curriculum.current is not None
        return self.curriculum.current.arm

    def refresh_difficulty(self) -> None:
        """Bucket difficulties from the newest IRT fit (the scorer refits in the background)."""
        with self.engine.connect() as conn:
            fitted = bucket_difficulties(conn)
        names = {info.id: name for name, info in self.buckets.items()}
        self.curriculum.set_difficulties(
            {names[i]: d.difficulty for i, d in fitted.items() if i in names}
        )

    def end_round(self) -> None:
        """Evaluate the round's focus bucket, feed the teacher, store the decision."""
        assert self.curriculum.current is not None
        bucket_id = self.curriculum.current.bucket_id
        with self.engine.connect() as conn:
            probe_sets = load_probe_sets(conn, [bucket_id], self.curriculum.config.eval_probes)
        accuracy, answers = None, {}
        if probe_sets:  # a bucket without probes is judged by its training loss alone
            probes = probe_sets[0]
            correct = self._probe_answers(probes)
            accuracy = sum(correct) / len(correct)
            answers = dict(zip(probes.ids, correct, strict=True))
        record = self.curriculum.finish_round(self.state.step, accuracy, answers)
        with self.engine.connect() as conn:
            params = item_parameters(conn, list(self.curriculum.evidence))
        self.curriculum.update_ability(params)
        with self.fenced_transaction() as conn:
            record_decision(conn, record)

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

    def teacher_snapshot(self) -> dict[str, Any]:
        snapshot = self.curriculum.snapshot()
        snapshot["ensemble"] = self.scorer.summary if self.scorer is not None else None
        return snapshot

    def trainable_buckets(self) -> list[str]:
        """Active buckets with train examples in the replay index, by name."""
        sizes = self.store.bucket_sizes()
        return sorted(
            name
            for name, n in sizes.items()
            if n > 0 and name in self.buckets and self.buckets[name].status == "active"
        )

    def keep_lease(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.config.lease_seconds / 3:
            return
        if not lease.heartbeat(self.engine, self.holder, self.status()):
            raise LeaseLost(f"{self.holder} lost the training lease")
        self._last_heartbeat = now

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/learner`` shows (stored in the lease row)."""
        return {
            "step": self.state.step,
            "paused": self.paused,
            "examples_seen": self.state.examples_seen,
            "tokens_seen": self.state.tokens_seen,
            "last_loss": self.state.last_loss,
            "last_version": self.state.last_version,
            "tokens_per_second": round(self._tokens_per_second, 1),
            "buckets": len(self.buckets),
            "train_examples": len(self.store) if hasattr(self, "store") else 0,
            "base_model": self.base_model,
            "device": str(self.device),
            "teacher": {
                "policy": self.curriculum.policy.name,
                "focus": None if self.curriculum.current is None else self.curriculum.current.arm,
                "learner_ability": self.curriculum.ability,
            },
        }

    def train_step(self, focus: BucketInfo, batch: MixedBatch) -> np.ndarray:
        """One LoRA step on an importance-weighted batch; losses become new priorities.

        Returns the per-example losses ``[B]``."""
        started = time.perf_counter()
        encoded = encode_examples(
            self.tokenizer, [(e.prompt, e.target) for e in batch.examples], self.config.max_length
        ).to(self.device)
        losses = per_example_loss(self.model, encoded)  # (B,)
        weights = torch.as_tensor(batch.weights, device=self.device)  # (B,), max 1
        # Prioritized replay samples high-loss items more often; the importance weights
        # undo that bias in the gradient (Schaul et al. 2015).
        loss = (weights * losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        per_example = losses.detach().cpu().numpy()  # (B,)
        self.store.update_priorities(batch.ids, per_example)

        tokens = int(encoded.attention_mask.sum())
        elapsed = max(time.perf_counter() - started, 1e-9)
        self._tokens_per_second = 0.9 * self._tokens_per_second + 0.1 * tokens / elapsed
        st = self.state
        st.step += 1
        st.examples_seen += len(batch.examples)
        st.tokens_seen += tokens
        st.last_loss = float(per_example.mean())
        for example in batch.examples:
            st.seen_per_bucket[example.bucket] = st.seen_per_bucket.get(example.bucket, 0) + 1
        if focus.id not in st.trained_since_promotion:
            st.trained_since_promotion.append(focus.id)
        return per_example

    def save_checkpoint(self) -> None:
        if self.state.step == 0 or self.state.step == self._checkpointed_step:
            return  # nothing new to save
        self._checkpointed_step = self.state.step
        self.store.flush()
        self.state.replay = self.store.state_dict()
        self.state.rng = dict(self.rng.bit_generator.state)
        self.state.teacher = self.curriculum.state_dict()
        self.checkpoints.save(self.model, self.optimizer, self.state.__dict__)
        with self.fenced_transaction() as conn:
            save_snapshot(
                conn,
                self.state.step,
                self.curriculum.policy.name,
                self.teacher_snapshot(),
                self.curriculum.config.snapshots_kept,
            )

    # --- versions ----------------------------------------------------------------------

    def provenance(self, version: int) -> dict[str, Any]:
        return {
            "version": version,
            "base_model": self.base_model,
            "base_model_dir": str(self.model_dir),
            "parent_version": self.state.last_version,
            "train_step": self.state.step,
            "examples_seen": self.state.examples_seen,
            "tokens_seen": self.state.tokens_seen,
            "data_seen": dict(self.state.seen_per_bucket),
            "lora": lora_config(self.config).to_dict(),
            "learner": self.config.to_dict(),
        }

    def save_version(self) -> tuple[int, Path]:
        """Write the current adapter as a new version directory, then record its row.

        The directory is written outside any transaction (on SQLite a write transaction
        blocks ingestion); only the lease holder can record it (one learner owns the
        version numbers), which the fenced transaction checks.
        """
        with self.engine.connect() as conn:
            version = registry.next_version(conn)
        provenance = self.provenance(version)
        path = self.data_dir / "adapters" / f"v{version:05d}"

        def fill(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            registry.write_provenance(tmp, provenance)

        write_dir_atomically(path, fill)
        with self.fenced_transaction() as conn:
            registry.record_version(conn, version, path, provenance, {})
        self.state.last_version = version
        return version, path

    @contextmanager
    def fenced_transaction(self) -> Iterator[Connection]:
        """A write transaction that commits only while this learner holds the lease."""
        with write_transaction(self.engine) as conn:
            # The status goes along: a renewal here also stands for the periodic heartbeat.
            if not lease.renew(conn, self.holder, self.status()):
                raise LeaseLost(f"{self.holder} lost the training lease")
            self._last_heartbeat = time.monotonic()
            yield conn

    def _probe_answers(self, probes: ProbeSet) -> list[bool]:
        """Whether the current model answers each probe right."""
        self.keep_lease()  # evaluations take a while: keep the lease alive between buckets
        return answers_correct(
            self.model, self.tokenizer, probes.examples, probes.grader, self.config.max_new_tokens
        )

    def _evaluate_current(self, probes: ProbeSet) -> float:
        correct = self._probe_answers(probes)
        return sum(correct) / len(correct)

    def _evaluate_base(self, probes: ProbeSet) -> float:
        with self.model.disable_adapter():
            return self._evaluate_current(probes)

    def _evaluate_stored(self, path: Path) -> Evaluator:
        """Evaluate a saved version by loading it beside the trained adapter for a moment."""

        def run(probes: ProbeSet) -> float:
            self.model.load_adapter(str(path), adapter_name="reference")
            self.model.set_adapter("reference")
            try:
                return self._evaluate_current(probes)
            finally:
                self.model.set_adapter("default")
                self.model.delete_adapter("reference")

        return run

    def _reference_evaluator(self, active: int | None, path: str | None) -> Evaluator:
        if active is None or path is None:
            return self._evaluate_base
        return self._evaluate_stored(Path(path))

    def make_candidate(self) -> dict[str, Any]:
        """Save, evaluate and (if it helps the trained buckets) promote a candidate.

        Evaluation runs outside any transaction (it takes seconds, and on SQLite a write
        transaction would hold up ingestion); results are written in one short one.
        """
        version, _ = self.save_version()
        step = self.state.step
        with self.engine.connect() as conn:
            probe_sets = load_probe_sets(
                conn, self.state.trained_since_promotion, self.config.eval_max_probes
            )
            active = registry.active_version(conn)
            active_row = registry.get_version(conn, active) if active is not None else None
            known = {p.bucket: stored_score(conn, active, p) for p in probe_sets}
        evaluate_reference = self._reference_evaluator(
            active, active_row.path if active_row else None
        )
        candidate = {p.bucket: self._evaluate_current(p) for p in probe_sets}
        fresh = {p.bucket: evaluate_reference(p) for p in probe_sets if known[p.bucket] is None}
        reference = {b: s if s is not None else fresh[b] for b, s in known.items()}
        report = promotion_report(candidate, reference, active, self.config.min_gain)

        with self.fenced_transaction() as conn:
            for probes in probe_sets:
                store_score(conn, version, probes, candidate[probes.bucket], step)
                if probes.bucket in fresh:
                    store_score(conn, active, probes, fresh[probes.bucket], step)
            if report["promote"] and registry.active_version(conn) != active:
                report.update(promote=False, reason="the active version changed meanwhile")
            if report["promote"]:
                registry.promote(conn, version, "learner", report["reason"])
                self.state.trained_since_promotion = []
            status = "promoted" if report["promote"] else "candidate"
            registry.set_status(conn, version, status, report)
        log.info("candidate v%d at step %d: %s", version, step, report["reason"])
        return report
