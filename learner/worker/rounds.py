"""The teacher's rounds in the loop: a placement evaluation of each new bucket, the round's
focus, its end-of-round evaluation, and re-evaluations of learned buckets fed to the teacher
as absolute learning progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from learner.curriculum.ensemble import DifficultyScorer
from learner.curriculum.rounds import Curriculum, Rest
from learner.evaluation.probes import (
    FORCED_GRADERS,
    answer_probes,
    forced_scores,
    greedy_answers,
)
from learner.store.buckets import BucketInfo
from learner.store.difficulty import bucket_difficulties, item_parameters
from learner.store.probes import ProbeSet, load_probe_sets, load_watch_set
from learner.store.teacher import record_decision, renew_rest
from learner.training.step import Trainer
from learner.worker.candidates import CandidateOutcome
from learner.worker.lease_holder import Fenced

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A bucket's probes answered by the current weights."""

    accuracy: float
    answers: dict[int, bool]  # probe example id -> answered correctly
    heldout_loss: float | None  # mean target loss of the probes (teacher forcing)


class RoundKeeper:
    """Asks the curriculum for each round's focus and feeds evaluations back to it."""

    def __init__(
        self,
        engine: Engine,
        curriculum: Curriculum,
        trainer: Trainer,
        fenced: Fenced,
        is_refusal: Callable[[str], bool],
    ) -> None:
        self.engine, self.curriculum, self.trainer = engine, curriculum, trainer
        self.fenced, self.is_refusal = fenced, is_refusal
        self._difficulty_fits: int | None = None  # the scorer's fit count last read
        self._focused: set[str] = set()  # arms that were a focus since the last candidate
        self._placed: set[str] = set()  # arms given a placement evaluation (or without probes)

    def focus(
        self,
        arms: list[str],
        buckets: dict[str, BucketInfo],
        step: int,
        scorer: DifficultyScorer | None,
        sizes: dict[str, int],
        keep_lease: Callable[[], None] = lambda: None,
    ) -> str | None:
        """The focus bucket: the running round's, or a new decision of the teacher; None
        while the teacher rests (a new rest is stored as a decision without a bucket)."""
        self.curriculum.note_sizes({a: sizes.get(a, 0) for a in arms})
        if not self.curriculum.needs_decision(arms):
            current = self.curriculum.current
            return None if current is None else current.arm
        # Bucket difficulties change only with a refit: re-read them after one (and once
        # at start, for fits stored by an earlier run).
        fits = scorer.fits if scorer is not None else 0
        if fits != self._difficulty_fits:
            self.refresh_difficulties(buckets)
            self._difficulty_fits = fits
        if self.curriculum.harm.needs_baseline:  # so that this round is charged too
            rate = self._watched_rate()
            if rate is not None:
                self.curriculum.harm.set_baseline(rate)
        ids = {a: buckets[a].id for a in arms}
        self.place(ids, keep_lease)
        decided = self.curriculum.decide(arms, ids, step)
        if isinstance(decided, Rest):
            record = self.curriculum.rest_record(decided)
            with self.fenced() as conn:
                if not (decided.renews and renew_rest(conn, record)):
                    log.info("teacher rests: %s", decided.reason)
                    record_decision(conn, record)
            return None
        self._focused.add(decided.arm)
        return decided.arm

    def place(self, ids: dict[str, int], keep_lease: Callable[[], None]) -> None:
        """Placement: a bucket the teacher has no evaluation of is evaluated once before
        its first decision, without training. A bucket the model already masters then needs
        no round at all, and the pre-test is the first point of every bucket's progress
        fit, so one that cannot be learned (noise, out of reach) is judged after one round
        instead of two. It is not a round: it enters no stall window (teacher.stall)."""
        new = [a for a in ids if a not in self._placed and self.curriculum.unevaluated(a)]
        if not new:
            return
        with self.engine.connect() as conn:
            probe_sets = load_probe_sets(
                conn, [ids[a] for a in new], self.curriculum.config.eval_probes
            )
        self._placed.update(new)  # a bucket without probes is judged by its rounds alone
        for probes in probe_sets:
            keep_lease()  # evaluations take a while
            result = self.evaluate(probes)
            log.info("placement of %s: accuracy %.3f", probes.bucket, result.accuracy)
            self.curriculum.observe_placement(probes.bucket, result.accuracy, result.answers)
        if probe_sets:
            self._update_ability()

    def evaluate(self, probes: ProbeSet) -> Evaluation:
        """The current weights on the probes: right or wrong per probe, and the target loss.

        With ``round_answers`` "forced" and an exact or numeric grader, right means the
        forced match of the loss's own forward pass: no answer is generated (decoding was
        most of a round end's cost). Otherwise the greedy answers are decoded and graded."""
        model, tokenizer, config = self.trainer.model, self.trainer.tokenizer, self.trainer.config
        forced = forced_scores(model, tokenizer, probes.examples, config.max_length)
        if self.curriculum.config.round_answers == "forced" and probes.grader in FORCED_GRADERS:
            correct = forced.matches
        else:
            results = answer_probes(model, tokenizer, probes, config.max_new_tokens)
            correct = [a.correct for a in results]
        return Evaluation(
            accuracy=sum(correct) / len(correct),
            answers=dict(zip(probes.ids, correct, strict=True)),
            heldout_loss=forced.mean_loss,
        )

    def refresh_difficulties(self, buckets: dict[str, BucketInfo]) -> None:
        """Give the teacher the buckets' difficulties as last fitted by the ensemble."""
        with self.engine.connect() as conn:
            fitted = bucket_difficulties(conn)
        names = {info.id: name for name, info in buckets.items()}
        self.curriculum.set_difficulties(
            {names[i]: d.difficulty for i, d in fitted.items() if i in names}
        )

    def end_round(self, step: int, keep_lease: Callable[[], None]) -> str | None:
        """Evaluate the round's focus bucket, feed the teacher, store the decision, and
        charge the round's effect on alignment to its arm; returns the arm when that put
        it in quarantine."""
        assert self.curriculum.current is not None
        arm = self.curriculum.current.arm
        bucket_id = self.curriculum.current.bucket_id
        with self.engine.connect() as conn:
            probe_sets = load_probe_sets(conn, [bucket_id], self.curriculum.config.eval_probes)
        accuracy, answers, heldout_loss = None, {}, None
        if probe_sets:  # a bucket without probes is judged by its training loss alone
            keep_lease()  # evaluations take a while
            result = self.evaluate(probe_sets[0])
            accuracy, answers, heldout_loss = result.accuracy, result.answers, result.heldout_loss
        log.info("round on %s: accuracy %s, held-out loss %.4f", arm, accuracy, heldout_loss or 0.0)
        record = self.curriculum.finish_round(step, accuracy, answers, heldout_loss)
        self._update_ability()
        with self.fenced() as conn:
            record_decision(conn, record)
        return self._watch_alignment(arm)

    def _watched_rate(self) -> float | None:
        """The refusal rate on the watch sample of harmful probes (None: none, or off)."""
        if self.curriculum.config.watch_probes == 0:
            return None
        with self.engine.connect() as conn:
            watch = load_watch_set(conn, self.is_refusal, self.curriculum.config.watch_probes)
        if watch is None:
            return None
        texts = greedy_answers(
            self.trainer.model,
            self.trainer.tokenizer,
            watch.examples,
            self.trainer.config.max_new_tokens,
        )
        return sum(self.is_refusal(t) for t in texts) / len(texts)

    def _watch_alignment(self, arm: str) -> str | None:
        """Charge the change of the watched refusal rate to the round's arm (teacher.harm)."""
        rate = self._watched_rate()
        if rate is None:
            return None
        reason = self.curriculum.harm.observe(arm, rate, time.time())
        if reason is None:
            return None
        log.warning("quarantined bucket %s: %s", arm, reason)
        return arm

    def _update_ability(self) -> None:
        with self.engine.connect() as conn:
            params = item_parameters(conn, list(self.curriculum.evidence))
        self.curriculum.update_ability(params)

    def observe_reevaluation(self, outcome: CandidateOutcome, buckets: dict[str, Any]) -> None:
        """A candidate re-evaluated every learned bucket: task buckets that were not a
        focus since the last candidate get the result as progress (absolute: forgetting
        attracts the teacher's attention too). Focus buckets already have round-end
        evaluations on their own sample; mixing samples would look like progress."""
        for bucket, accuracy in outcome.accuracy.items():
            info = buckets.get(bucket)
            if info is not None and info.kind == "task" and bucket not in self._focused:
                self.curriculum.observe_evaluation(bucket, accuracy)
        self.curriculum.evidence.update(outcome.answers)
        self._update_ability()
        self._focused.clear()
        if self.curriculum.current is not None:  # the running round goes on
            self._focused.add(self.curriculum.current.arm)
