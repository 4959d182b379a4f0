"""The learner worker: a thin loop over its parts (:mod:`learner.worker.parts`).

One tick: keep the lease -> control commands, the bucket catalog, new examples and others'
registry events (a rollback loads the version rolled back to) -> the teacher's focus ->
a mixed batch -> one LoRA step -> its losses become replay priorities -> at a round's end
the focus bucket's probes feed the teacher -> every ``candidate_every`` steps a candidate
(saved, judged by the gate, recorded; the lineage moves on) -> every ``checkpoint_every``
steps a checkpoint (:mod:`learner.worker.resume`), from which a killed worker restarts.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from sqlalchemy.exc import OperationalError

from learner.store import control
from learner.store.db import write_transaction
from learner.worker.lease_holder import LeaseLost
from learner.worker.session import LearnerSession

log = logging.getLogger(__name__)

#: First and longest wait between tries to reach the database during an outage.
OUTAGE_RETRY_S, MAX_OUTAGE_RETRY_S = 0.5, 2.0


class Learner(LearnerSession):
    """A learner worker: :meth:`run` trains until stopped, one :meth:`tick` at a time."""

    def run(self, stop: threading.Event | None = None) -> None:
        """Train until ``stop`` is set or ``max_steps`` is reached."""
        stop = stop or threading.Event()
        if not self.wait_for_lease(stop):
            return
        self.setup()
        self.lease.keep(force=True)
        self.start_scorer()
        try:
            limit = self.config.max_steps
            while not stop.is_set() and (limit is None or self.state.step < limit):
                try:
                    idle = not self.tick()
                    self.housekeeper.maybe_run(idle)  # pruning, mostly in idle time
                except OperationalError as exc:  # the database is down or unreachable
                    self.ride_out_outage(exc, stop)
                    continue
                if idle:
                    stop.wait(self.config.poll_seconds)
            self.collect_candidate(wait=True)  # its verdict belongs to this run
            self.save_checkpoint()
        except LeaseLost:  # another learner owns the checkpoints now: write nothing more
            log.warning("lost the training lease; stopping without a checkpoint")
            return
        finally:
            self.stop_scorer()
            self.parts.close()
        self.lease.release()

    def ride_out_outage(self, error: OperationalError, stop: threading.Event) -> None:
        """Wait for the database to answer again, keeping the model and its state in
        memory (a restart would reload both and lose the steps since the last checkpoint).

        The lease is renewed first: if another learner took it meanwhile, ``LeaseLost``
        ends this one (one holder at a time). A version whose save the outage interrupted
        is left ``pending``; it is retired as after a crash."""
        log.warning("database unavailable (%s); training waits for it", error.orig or error)
        delay = OUTAGE_RETRY_S
        while not stop.wait(delay):
            try:
                self.lease.keep(force=True)
            except OperationalError:
                delay = min(2 * delay, MAX_OUTAGE_RETRY_S)
                continue
            self.parts.candidates.recover()
            log.warning("database back; training goes on at step %d", self.state.step)
            return

    def poll(self) -> None:
        """Control commands, the bucket catalog, new examples and registry events."""
        # Reads only: on SQLite a write transaction per step would hold up ingestion.
        with self.engine.connect() as conn:
            pending, self.paused = control.has_pending(conn), control.is_paused(conn)
            self.parts.batches.poll(conn)
            if self.parts.lineage.follow(conn):
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
        parts, buckets = self.parts, self.parts.batches.buckets
        arms = self.curriculum.allowed(parts.batches.focus_arms())
        if self.paused or not arms:
            return False
        sizes = parts.replay.bucket_sizes()
        focus = parts.rounds.focus(
            arms, buckets, self.state.step, self.scorer, sizes, self.lease.keep
        )
        if focus is None:  # the teacher rests: no learnable arm now
            self.save_checkpoint()  # what was trained so far, and the teacher's state
            return False
        batch = parts.batches.batch(focus)
        pairs = [(e.prompt, e.target) for e in batch.examples]
        losses, tokens = parts.trainer.step(pairs, batch.weights, distill=batch.anchor)
        parts.replay.update_priorities(batch.ids, losses)
        self.state.count([e.bucket for e in batch.examples], losses, tokens)
        parts.lineage.trained_on(buckets[focus].id)
        in_focus = np.array([e.bucket == focus for e in batch.examples])
        self.curriculum.record_loss(float(losses[in_focus].mean()))
        if self.curriculum.round_complete():
            quarantined = parts.rounds.end_round(self.state.step, self.lease.keep)
            if quarantined is not None:
                parts.replay.exclude_bucket(quarantined)
                self.save_checkpoint()  # the quarantine is in the teacher's saved state
        step = self.state.step
        if step % self.config.candidate_every == 0:
            self.start_candidate()
        if step % self.config.candidate_every == 0 or step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        return True

    def _end_quarantines(self) -> None:
        """Quarantines whose term is over: the buckets train and replay again, on probation."""
        for arm in (released := self.curriculum.release_quarantine(time.time())):
            self.parts.replay.include_bucket(arm)
            log.warning("bucket %s released from quarantine on probation", arm)
        if released:
            self.save_checkpoint()
