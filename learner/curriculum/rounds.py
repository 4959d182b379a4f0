"""The learner's side of the teacher: rounds of focus, progress feedback, learner ability.

A round is ``round_steps`` training steps with one focus bucket chosen by the policy. At
the end of the round the learner evaluates the focus bucket's probes; their accuracy and the
round's mean focus loss go back to the policy (``observe``), which turns them into a
learning-progress reward. The finished round becomes a ``teacher_decisions`` row.

The learner's ability theta is estimated on the ensemble's IRT scale from its latest answer
to every probe it was evaluated on (items with a fitted difficulty); with the buckets' mean
difficulties it gives ``lp_zpd`` its cold-start prior p(1-p), p = sigmoid(theta - b).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from learner.config import TeacherConfig
from learner.store.teacher import DecisionRecord
from teacher.harm import HarmWatch
from teacher.irt import estimate_ability
from teacher.policies import make_policy


@dataclass
class Round:
    """The round in progress: its decision and the focus losses seen so far."""

    arm: str
    bucket_id: int
    start_step: int
    scores: dict[str, float]
    reason: str
    losses: list[float] = field(default_factory=list)


@dataclass
class Rest:
    """The policy decided that no arm is worth training: nothing trains until ``until``
    (time.monotonic()), or until the arms change or new data wakes one up."""

    arms: tuple[str, ...]
    step: int
    scores: dict[str, float]
    reason: str
    until: float
    renews: bool = False  # the decision before was a rest too: one rest period, one row


class Curriculum:
    """Asks the configured policy for each round's focus and feeds the results back."""

    def __init__(self, config: TeacherConfig, seed: int) -> None:
        self.config = config
        self.policy = make_policy(config.policy, dict(config.options))
        # Its own stream, so the teacher's draws do not shift the batch sampling.
        self.rng = np.random.default_rng([seed, 0x7EAC])
        self.current: Round | None = None
        self.rest: Rest | None = None
        self.in_rest_period = False  # the last decision was a rest (a rest period is one row)
        self.evidence: dict[int, bool] = {}  # probe example id -> latest answer correct
        self.ability: float | None = None
        self.ability_se: float | None = None
        self.difficulty: dict[str, float] = {}
        self.harm = HarmWatch(config.harm_config())

    # --- rounds -------------------------------------------------------------------------

    def weights_replaced(self, why: str) -> None:
        """The learner continues from other weights (a reset after rejections, a rollback
        or promotion by someone else): the harm watch's baseline and the policy's stall
        evidence describe the old ones."""
        self.harm.forget_baseline()
        self.policy.weights_replaced(why)

    def allowed(self, arms: list[str]) -> list[str]:
        """The arms that may be a focus: all but the quarantined ones."""
        return [a for a in arms if a not in self.harm.quarantined]

    def release_quarantine(self, now: float) -> list[str]:
        """Arms whose quarantine term is over (``now``: wall-clock seconds), released on
        probation: a fresh harm window, and a woken arm for the policy."""
        released = self.harm.release_due(now)
        for arm in released:
            self.policy.wake(arm, "released from quarantine on probation")
        if released:
            self.rest = None
        return released

    def needs_decision(self, arms: list[str]) -> bool:
        """True when no round is running (a round whose bucket vanished is dropped) and no
        rest is on (a rest ends at its time, or when the arms change)."""
        if self.current is not None and self.current.arm not in arms:
            self.current = None  # paused or gone mid-round: no feedback, choose again
        if self.rest is not None and (
            time.monotonic() >= self.rest.until or tuple(arms) != self.rest.arms
        ):
            self.rest = None
        return self.current is None and self.rest is None

    def note_sizes(self, sizes: dict[str, int]) -> None:
        """Train set sizes of the arms: new data may wake an arm up, which ends a rest."""
        woken = [arm for arm, n in sizes.items() if self.policy.note_size(arm, n)]
        if woken:
            self.rest = None

    def decide(self, arms: list[str], bucket_ids: dict[str, int], step: int) -> Round | Rest:
        """A new round, or a rest when the policy finds no arm worth training."""
        decision = self.policy.choose(arms, self.rng)
        scores = dict(decision.scores)
        if decision.arm is None:
            until = time.monotonic() + self.config.rest_seconds
            self.rest = Rest(tuple(arms), step, scores, decision.reason, until, self.in_rest_period)
            self.in_rest_period = True
            return self.rest
        self.in_rest_period = False
        self.current = Round(decision.arm, bucket_ids[decision.arm], step, scores, decision.reason)
        return self.current

    def rest_record(self, rest: Rest) -> DecisionRecord:
        """The decision row of a rest: no bucket, no steps."""
        return DecisionRecord(
            step=rest.step,
            bucket_id=None,
            policy=self.policy.name,
            scores=rest.scores,
            reason=rest.reason,
            steps=0,
            accuracy=None,
            loss=None,
            reward=None,
        )

    def record_loss(self, loss: float) -> None:
        if self.current is not None:
            self.current.losses.append(float(loss))

    def round_complete(self) -> bool:
        return self.current is not None and len(self.current.losses) >= self.config.round_steps

    def finish_round(
        self,
        step: int,
        accuracy: float | None,
        answers: dict[int, bool],
        heldout_loss: float | None = None,
    ) -> DecisionRecord:
        """Feed the round's result to the policy; returns the decision row to store."""
        if self.current is None:
            raise RuntimeError("no round in progress")
        current, self.current = self.current, None
        loss = float(np.mean(current.losses)) if current.losses else None
        reward = self.policy.observe(
            current.arm, accuracy=accuracy, loss=loss, heldout_loss=heldout_loss
        )
        self.evidence.update(answers)
        return DecisionRecord(
            step=current.start_step,
            bucket_id=current.bucket_id,
            policy=self.policy.name,
            scores=current.scores,
            reason=current.reason,
            steps=step - current.start_step,
            accuracy=accuracy,
            loss=loss,
            reward=reward,
        )

    def unevaluated(self, arm: str) -> bool:
        """True while the policy has seen no probe accuracy of the arm."""
        return self.policy.probe.last(arm) is None

    def observe_placement(self, arm: str, accuracy: float, answers: dict[int, bool]) -> None:
        """A new bucket evaluated before its first round (no training): where it starts."""
        self.policy.observe(arm, accuracy=accuracy, round_end=False)
        self.evidence.update(answers)

    def observe_evaluation(self, arm: str, accuracy: float) -> float | None:
        """A re-evaluation outside the arm's rounds (at a candidate): its accuracy change is
        absolute learning progress, so forgetting makes the arm attractive again."""
        return self.policy.observe(arm, accuracy=accuracy, round_end=False)

    # --- difficulty and ability --------------------------------------------------------

    def set_difficulties(self, by_arm: dict[str, float]) -> None:
        self.difficulty = dict(by_arm)
        for arm, b in by_arm.items():
            self.policy.set_difficulty(arm, b)

    def update_ability(self, item_params: dict[int, tuple[float, float]]) -> None:
        """Re-estimate theta from the latest probe answers to items with a fitted difficulty."""
        ids = [i for i in self.evidence if i in item_params]
        if not ids:
            return
        correct = np.array([float(self.evidence[i]) for i in ids])  # (n,)
        b = np.array([item_params[i][0] for i in ids])  # (n,)
        a = np.array([item_params[i][1] for i in ids])  # (n,)
        self.ability, self.ability_se = estimate_ability(correct, b, a)
        self.policy.set_ability(self.ability)

    # --- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "rng": dict(self.rng.bit_generator.state),
            "current": None if self.current is None else asdict(self.current),
            "evidence": [[i, c] for i, c in self.evidence.items()],
            "ability": self.ability,
            "ability_se": self.ability_se,
            "difficulty": dict(self.difficulty),
            "harm": self.harm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a state saved under another policy keeps only the learner's ability data."""
        if state["policy"]["name"] == self.policy.name:
            self.policy.load_state_dict(state["policy"])
            self.rng.bit_generator.state = state["rng"]
            self.current = None if state["current"] is None else Round(**state["current"])
        self.evidence = {int(i): bool(c) for i, c in state["evidence"]}
        self.ability, self.ability_se = state["ability"], state["ability_se"]
        self.set_difficulties(state["difficulty"])
        self.policy.set_ability(self.ability)
        if "harm" in state:
            self.harm.load_state_dict(state["harm"])

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /v1/teacher`` shows besides the decisions (stored in teacher_state)."""
        return {
            "policy": self.policy.name,
            "config": asdict(self.config),
            "round": None
            if self.current is None
            else {
                "bucket": self.current.arm,
                "start_step": self.current.start_step,
                "steps": len(self.current.losses),
            },
            "resting": None if self.rest is None else self.rest.reason,
            "learner_ability": self.ability,
            "learner_ability_se": self.ability_se,
            "probes_answered": len(self.evidence),
            "bucket_difficulty": dict(self.difficulty),
            "policy_state": self.policy.state_dict(),
            "quarantined": dict(self.harm.quarantined),
            "quarantine_strikes": dict(self.harm.strikes),
            "watched_refusal_rate": self.harm.last_rate,
        }
