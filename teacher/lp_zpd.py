"""`lp_zpd`, the default teacher: UCB on learning progress with a zone-of-proximal-development
cold start.

- Progress of an arm is |slope| of a linear fit to its last probe accuracies (TSCL "window",
  Matiisen et al. 2017), absolute so that forgetting also attracts attention (ALP, Portelas
  et al. 2019). A fit over several evaluations is far less noisy than a two-point difference,
  which keeps unlearnable (noise) arms from looking like progress.
- Score: discounted / sliding-window UCB, mean + c * sqrt(log N / n).
- An arm with fewer than 2 evaluations is scored cold_bonus + p(1-p), p = sigmoid(theta - b):
  TSCL's forced exploration, ordered by predicted learnability (most informative near
  p = 0.5, as in online difficulty filtering). Without b or theta, p(1-p) = 0.25.
- Mastered arms (last probe accuracy >= mastery and |slope| <= flat_tol) are not chosen as
  focus; they are left to replay. If every arm is mastered, the best-scored one is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from teacher.base import Decision, Policy, PolicyConfig, RewardWindow, argmax, ucb_bonus
from teacher.progress import WindowSlope


@dataclass
class LpZpdConfig(PolicyConfig):
    c: float = 0.02  # UCB exploration weight, on the scale of accuracy gained per evaluation
    window: int = 100  # rounds a reward stays in the UCB window
    gamma: float = 0.99  # discount per round (1.0: plain sliding window)
    slope_window: int = 6  # probe evaluations in the progress fit
    flat_tol: float = 0.01  # |slope| at or below this counts as flat
    cold_bonus: float = 1.0  # lifts arms without progress history above every warm arm

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def set_difficulty(self, arm: str, b: float) -> None:
        """Bucket difficulty b (mean IRT difficulty of its items)."""
        self.difficulty[arm] = float(b)

    def set_ability(self, theta: float | None) -> None:
        """The learner's current IRT ability, on the same scale as the difficulties."""
        self.theta = None if theta is None else float(theta)

    def update(self, arm: str, reward: float) -> None:
        self.rewards.add(arm, self.t, reward)

    def _accuracy_reward(self, arm: str, accuracy: float) -> float | None:
        self.probe.observe(arm, accuracy)
        slope = self.slopes.observe(arm, self.slopes.next_step(arm), accuracy)
        return abs(slope) if self.slopes.count(arm) >= 2 else None

    def is_cold(self, arm: str) -> bool:
        return self.slopes.count(arm) < 2

    def is_mastered(self, arm: str) -> bool:
        last = self.probe.last(arm)
        if last is None or last < self.config.mastery:
            return False
        # One evaluation shows no change either way, so it counts as flat.
        return self.is_cold(arm) or abs(self.slopes.slope(arm)) <= self.config.flat_tol

    def _score(self, arm: str, total: float) -> float:
        if self.is_cold(arm):
            return self.config.cold_bonus + learnability(self.theta, self.difficulty.get(arm))
        n, mean = self.rewards.stats(arm, self.t)
        if n == 0:  # rewards aged out of the window: fall back on the current progress
            mean = abs(self.slopes.slope(arm))
        return mean + ucb_bonus(self.config.c, total, n)

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        self.rewards.prune(self.t)
        total = sum(self.rewards.stats(a, self.t)[0] for a in arms)
        scores = {a: self._score(a, total) for a in arms}
        mastered = [a for a in arms if self.is_mastered(a)]
        focus = [a for a in arms if a not in mastered] or arms
        arm = argmax({a: scores[a] for a in focus}, rng)
        return Decision(
            arm, scores, self._reason(arm, scores[arm], mastered, len(focus) < len(arms))
        )

    def _reason(self, arm: str, score: float, mastered: list[str], excluded: bool) -> str:
        if self.is_cold(arm):
            p = learnability(self.theta, self.difficulty.get(arm))
            why = f"{arm!r} has no progress history; predicted learnability p(1-p)={p:.3f}"
        else:
            why = f"{arm!r} has the highest UCB on learning progress ({score:.4f})"
        if excluded:
            why += f"; mastered, left to replay: {', '.join(mastered)}"
        elif mastered:
            why += "; every arm is mastered"
        return f"lp_zpd: {why}"

    def _extra_state(self) -> dict[str, Any]:
        return {
            "slopes": self.slopes.state_dict(),
            "rewards": self.rewards.state_dict(),
            "difficulty": dict(self.difficulty),
            "theta": self.theta,
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.slopes.load_state_dict(state["slopes"])
        self.rewards.load_state_dict(state["rewards"])
        self.difficulty = {a: float(b) for a, b in state["difficulty"].items()}
        self.theta = None if state["theta"] is None else float(state["theta"])
