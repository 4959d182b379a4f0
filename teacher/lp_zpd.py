"""`lp_zpd`, the default teacher: UCB on learning progress with a zone-of-proximal-development
cold start.

- Progress of an arm is |slope| of a linear fit to its last probe accuracies (TSCL "window",
  Matiisen et al. 2017), absolute so that forgetting also attracts attention (ALP, Portelas
  et al. 2019), plus ``loss_weight`` times the relative fall per evaluation of its held-out
  target loss (Theil-Sen over the same window, ``teacher.progress.loss_trend``; loss-based
  progress as in Graves et al. 2017). Accuracy moves in steps of 1/probes and sits at zero
  while a bucket is being learned; the loss falls smoothly from the first rounds, so a
  learning arm outranks a noise arm (whose loss levels off) long before accuracy moves.
- Score: discounted / sliding-window UCB, mean + c * sqrt(log N / n).
- An arm with fewer than 2 evaluations is scored cold_bonus + p(1-p), p = sigmoid(theta - b):
  TSCL's forced exploration, ordered by predicted learnability (most informative near
  p = 0.5, as in online difficulty filtering). Without b or theta, p(1-p) = 0.25.
- Until an arm has had its patience budget (teacher.stall; more evaluations for an arm
  predicted hard), its mean progress is shrunk towards an optimistic prior,
  ``prior_progress * 4 p(1-p)`` (highest in the zone of proximal development), with the
  budget as pseudo-count, so a slow starter keeps getting rounds while the
  evidence is thin, and loses them as the evidence of no progress grows.
- Mastered arms (last probe accuracy >= mastery and |slope| within flat_tol or the slope's
  binomial noise, ``is_flat``) are not chosen as
  focus; they are left to replay (forgetting seen at a re-evaluation makes them unmastered,
  and their absolute progress high). Stalled arms (no progress within their budget) are
  only revisited at a decaying rate. If every arm is mastered or stalled, the decision is
  to rest (``arm`` None): training on noise would only cost what was learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from teacher.base import Decision, Policy, PolicyConfig, RewardWindow, argmax, ucb_bonus
from teacher.progress import WindowSlope
from teacher.stall import StallConfig, StallTracker, predicted_accuracy


@dataclass
class LpZpdConfig(PolicyConfig):
    c: float = 0.02  # UCB exploration weight, on the scale of accuracy gained per evaluation
    window: int = 100  # rounds a reward stays in the UCB window
    gamma: float = 0.99  # discount per round (1.0: plain sliding window)
    slope_window: int = 6  # probe evaluations in the progress fit
    flat_tol: float = 0.01  # |slope| at or below this counts as flat
    cold_bonus: float = 1.0  # lifts arms without progress history above every warm arm
    # Optimistic progress per evaluation assumed of an arm within its patience budget.
    prior_progress: float = 0.1
    # Weight of the held-out loss's relative fall per evaluation in the progress reward.
    loss_weight: float = 1.0
    stall: StallConfig = field(default_factory=StallConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.stall, dict):  # from JSON settings (LIFELONG_TEACHER__OPTIONS)
            self.stall = StallConfig(**self.stall)
        if self.prior_progress < 0 or self.loss_weight < 0:
            raise ValueError("prior_progress and loss_weight must be >= 0")
        if self.c < 0 or self.window < 1 or not 0.0 < self.gamma <= 1.0:
            raise ValueError("need c >= 0, window >= 1, 0 < gamma <= 1")
        if self.slope_window < 2 or self.flat_tol < 0 or self.cold_bonus < 0:
            raise ValueError("need slope_window >= 2, flat_tol >= 0, cold_bonus >= 0")


def learnability(theta: float | None, b: float | None) -> float:
    """p(1-p) with p = sigmoid(theta - b) (Rasch model); 0.25 when either is unknown."""
    if theta is None or b is None:
        return 0.25
    p = 1.0 / (1.0 + math.exp(-(theta - b)))
    return p * (1.0 - p)


class LpZpd(Policy):
    """UCB on absolute learning progress, cold-started by predicted learnability."""

    name = "lp_zpd"
    config_cls = LpZpdConfig
    config: LpZpdConfig

    def __init__(self, config: LpZpdConfig | None = None) -> None:
        super().__init__(config)
        self.slopes = WindowSlope(self.config.slope_window)
        self.rewards = RewardWindow(self.config.window, self.config.gamma)
        self.difficulty: dict[str, float] = {}
        self.theta: float | None = None
        self.stalls = StallTracker(self.config.stall)
        # Mastered arms that got new data since their last round: judged again (cold).
        self.unsettled: set[str] = set()

    def set_difficulty(self, arm: str, b: float) -> None:
        """Bucket difficulty b (mean IRT difficulty of its items)."""
        self.difficulty[arm] = float(b)
        self.stalls.note_difficulty(arm, float(b))

    def note_size(self, arm: str, train_examples: int) -> bool:
        """New data may make a stalled arm learnable, and may hold what a mastered arm does
        not know yet: True when it woke such an arm up (a mastered one is judged again by a
        round, as if it were new)."""
        stalled = self.stalls.is_stalled(arm)
        mastered = self.is_mastered(arm)
        if not self.stalls.note_size(arm, train_examples):
            return False
        if mastered:
            self.unsettled.add(arm)
            self.stalls.wake(arm, f"new data in a mastered bucket: {train_examples} examples")
        return stalled or mastered

    def wake(self, arm: str, why: str) -> None:
        self.stalls.wake(arm, why)

    def weights_replaced(self, why: str) -> None:
        self.stalls.restart_progressing(why)

    def _p(self, arm: str) -> float:
        return predicted_accuracy(self.theta, self.difficulty.get(arm))

    def set_ability(self, theta: float | None) -> None:
        """The learner's current IRT ability, on the same scale as the difficulties."""
        self.theta = None if theta is None else float(theta)

    def update(self, arm: str, reward: float) -> None:
        self.rewards.add(arm, self.t, reward)

    def _accuracy_reward(
        self, arm: str, accuracy: float, heldout_loss: float | None, round_end: bool
    ) -> float | None:
        self.probe.observe(arm, accuracy)
        self.stalls.observe(
            arm, accuracy, self._p(arm), self.config.mastery, heldout_loss, round_end
        )
        if round_end:
            self.unsettled.discard(arm)
        slope = self.slopes.observe(arm, self.slopes.next_step(arm), accuracy)
        if self.slopes.count(arm) < 2:
            return None
        return abs(slope) + self.config.loss_weight * self.loss_progress(arm)

    def loss_progress(self, arm: str) -> float:
        """Relative fall per round-end evaluation of the arm's held-out loss (0 if unknown)."""
        trend = self.stalls.trend(arm, self.config.slope_window)
        return 0.0 if trend is None else trend.progress

    def is_cold(self, arm: str) -> bool:
        return self.slopes.count(arm) < 2 or arm in self.unsettled

    def is_mastered(self, arm: str) -> bool:
        if arm in self.unsettled:
            return False
        last = self.probe.last(arm)
        if last is None or last < self.config.mastery:
            return False
        # One evaluation shows no change either way, so it counts as flat.
        return self.is_cold(arm) or self.is_flat(arm, last)

    def is_flat(self, arm: str, accuracy: float) -> bool:
        """|slope| within flat_tol, or within two standard errors of the slope that binomial
        noise alone gives (``stall.probes`` answers per evaluation at this accuracy). With
        32 probes an arm at 0.9 swings by +-0.05 an evaluation, and the slope of six such
        evaluations by +-0.013: a fixed tolerance of 0.01 calls that noise progress, and
        the arm took 17-24 of 60 rounds on the stream benchmark without gaining."""
        sd = math.sqrt(accuracy * (1.0 - accuracy) / self.config.stall.probes)
        tolerance = max(self.config.flat_tol, 2.0 * self.slopes.slope_se(arm, sd))
        return abs(self.slopes.slope(arm)) <= tolerance

    def _score(self, arm: str, total: float) -> float:
        if self.is_cold(arm):
            return self.config.cold_bonus + learnability(self.theta, self.difficulty.get(arm))
        n, mean = self.rewards.stats(arm, self.t)
        if n == 0:  # rewards aged out of the window: fall back on the current progress
            mean = abs(self.slopes.slope(arm))
        evaluated = self.stalls.evaluated(arm)
        budget = self.stalls.patience(self._p(arm))
        if evaluated < budget:  # thin evidence: shrink towards the optimistic prior
            # The prior is largest in the zone of proximal development (p near 0.5): an
            # arm predicted far too hard or too easy is not expected to progress much.
            prior = (
                self.config.prior_progress
                * 4.0
                * learnability(self.theta, self.difficulty.get(arm))
            )
            mean = (budget * prior + n * mean) / (budget + n)
        return mean + ucb_bonus(self.config.c, total, n)

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        self.rewards.prune(self.t)
        total = sum(self.rewards.stats(a, self.t)[0] for a in arms)
        scores = {a: self._score(a, total) for a in arms}
        mastered = [a for a in arms if self.is_mastered(a)]
        stalled = [a for a in arms if self.stalls.is_stalled(a) and a not in mastered]
        resting = ""
        if mastered:
            resting += f"; mastered, left to replay: {', '.join(mastered)}"
        if stalled:
            resting += f"; stalled: {', '.join(stalled)}"
        revisit = self.stalls.revisit(stalled, rng)
        if revisit is not None:
            why = self.stalls.stalled[revisit]
            visits = self.stalls.visits[revisit]
            reason = f"revisiting stalled {revisit!r} (visit {visits}; it {why}){resting}"
            return Decision(revisit, scores, f"lp_zpd: {reason}")
        focus = [a for a in arms if a not in mastered and a not in stalled]
        if not focus:
            reason = f"rest: no arm is learnable now{resting}"
            return Decision(None, scores, f"lp_zpd: {reason}")
        arm = argmax({a: scores[a] for a in focus}, rng)
        return Decision(arm, scores, f"lp_zpd: {self._why(arm, scores[arm])}{resting}")

    def _why(self, arm: str, score: float) -> str:
        woken = self.stalls.woken.get(arm)
        if self.is_cold(arm):
            p = learnability(self.theta, self.difficulty.get(arm))
            why = f"{arm!r} has no progress history; predicted learnability p(1-p)={p:.3f}"
        else:
            why = f"{arm!r} has the highest UCB on learning progress ({score:.4f})"
        return why if woken is None else f"{why} (woken up by {woken})"

    def _extra_state(self) -> dict[str, Any]:
        return {
            "slopes": self.slopes.state_dict(),
            "rewards": self.rewards.state_dict(),
            "difficulty": dict(self.difficulty),
            "theta": self.theta,
            "stalls": self.stalls.state_dict(),
            "unsettled": sorted(self.unsettled),
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.slopes.load_state_dict(state["slopes"])
        self.rewards.load_state_dict(state["rewards"])
        self.difficulty = {a: float(b) for a, b in state["difficulty"].items()}
        self.theta = None if state["theta"] is None else float(state["theta"])
        if "stalls" in state:  # states saved before stalls existed start without them
            self.stalls.load_state_dict(state["stalls"])
        self.unsettled = set(state.get("unsettled", []))
