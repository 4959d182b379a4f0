"""Bandit teachers over progress rewards: `ucb`, `exp3s` and `thompson`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax

from teacher.base import UNTRIED, Decision, Policy, PolicyConfig, RewardWindow, argmax, ucb_bonus


class _RewardWindowPolicy(Policy):
    """A policy whose whole memory is a :class:`RewardWindow` of recent rewards per arm."""

    rewards: RewardWindow

    def update(self, arm: str, reward: float) -> None:
        self.rewards.add(arm, self.t, reward)

    def _extra_state(self) -> dict[str, Any]:
        return {"rewards": self.rewards.state_dict()}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.rewards.load_state_dict(state["rewards"])


@dataclass
class UcbConfig(PolicyConfig):
    c: float = 0.1
    window: int = 100  # rounds a reward stays in the window
    gamma: float = 1.0  # 1.0: sliding-window UCB; < 1: discounted UCB

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.c < 0 or self.window < 1 or not 0.0 < self.gamma <= 1.0:
            raise ValueError("need c >= 0, window >= 1, 0 < gamma <= 1")


class Ucb(_RewardWindowPolicy):
    """Sliding-window / discounted UCB (Garivier & Moulines 2011) on the progress reward:
    mean_i + c * sqrt(log N / n_i); untried arms first."""

    name = "ucb"
    config_cls = UcbConfig
    config: UcbConfig

    def __init__(self, config: UcbConfig | None = None) -> None:
        super().__init__(config)
        self.rewards = RewardWindow(self.config.window, self.config.gamma)

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        self.rewards.prune(self.t)
        stats = {a: self.rewards.stats(a, self.t) for a in arms}
        total = sum(n for n, _ in stats.values())
        scores = {
            a: UNTRIED if n == 0 else m + ucb_bonus(self.config.c, total, n)
            for a, (n, m) in stats.items()
        }
        arm = argmax(scores, rng)
        why = "untried" if scores[arm] == UNTRIED else f"highest UCB {scores[arm]:.4f}"
        return Decision(arm, scores, f"ucb: {arm!r} {why}")


@dataclass
class Exp3sConfig(PolicyConfig):
    eta: float = 0.1  # step size on the importance-weighted reward
    eps: float = 0.05  # uniform exploration share
    history: int = 1000  # raw rewards kept for the 20th/80th percentile rescaling

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta <= 0 or not 0.0 <= self.eps <= 1.0 or self.history < 2:
            raise ValueError("need eta > 0, 0 <= eps <= 1, history >= 2")


class Exp3s(Policy):
    """Exp3.S as used by Graves et al. 2017 (arXiv 1704.03003), "Automated Curriculum Learning".

    pi = (1-eps) softmax(w) + eps/K; the chosen arm's reward is rescaled to [-1, 1] by the
    20th/80th percentiles of recent raw rewards and importance-weighted by 1/pi_k; then
    w_i <- log((1-a_t) e^{w_i + eta r_i} + a_t/(K-1) sum_{j!=i} e^{w_j}), a_t = 1/t.
    """

    name = "exp3s"
    config_cls = Exp3sConfig
    config: Exp3sConfig

    def __init__(self, config: Exp3sConfig | None = None) -> None:
        super().__init__(config)
        self.w: dict[str, float] = {}
        self.pi: dict[str, float] = {}  # distribution of the last decision
        self.raw: list[float] = []
        self.n_updates = 0

    def _probs(self, arms: list[str]) -> dict[str, float]:
        # A new arm starts at the best current weight, so it is explored rather than starved.
        start = max((self.w[a] for a in arms if a in self.w), default=0.0)
        for a in arms:
            self.w.setdefault(a, start)
        eps = self.config.eps
        p = (1 - eps) * softmax([self.w[a] for a in arms]) + eps / len(arms)
        return dict(zip(arms, (float(x) for x in p), strict=True))

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        self.pi = self._probs(arms)
        p = np.asarray(list(self.pi.values()))
        arm = arms[int(rng.choice(len(arms), p=p / p.sum()))]
        return Decision(arm, dict(self.pi), f"exp3s: sampled {arm!r} with p={self.pi[arm]:.3f}")

    def rescale(self, raw: float) -> float:
        """Map a raw reward to [-1, 1] by the 20th/80th percentiles of recent raw rewards."""
        lo, hi = np.percentile(self.raw, [20, 80])
        if hi <= lo:
            return 0.0
        return float(np.clip(2 * (raw - lo) / (hi - lo) - 1, -1.0, 1.0))

    def update(self, arm: str, reward: float) -> None:
        self.raw.append(float(reward))
        del self.raw[: -self.config.history]
        arms = list(self.pi)
        if arm not in arms or len(arms) == 1:  # nothing to weight against
            return
        self.n_updates += 1
        k = len(arms)
        r_hat = {a: 0.0 for a in arms}
        r_hat[arm] = self.rescale(reward) / self.pi.get(arm, 1.0)
        w = np.array([self.w[a] for a in arms])
        a_t = 1.0 / self.n_updates
        gained = w + self.config.eta * np.array([r_hat[a] for a in arms])
        for i, a in enumerate(arms):
            mix = math.log(a_t / (k - 1)) + logsumexp(np.delete(w, i))
            keep = math.log1p(-a_t) + gained[i] if a_t < 1 else -math.inf
            self.w[a] = float(np.logaddexp(keep, mix))
        self._recenter()

    def _recenter(self) -> None:
        # Softmax is shift-invariant; keep weights near 0 so they never overflow.
        m = max(self.w.values())
        self.w = {a: v - m for a, v in self.w.items()}

    def _extra_state(self) -> dict[str, Any]:
        return {"w": dict(self.w), "pi": dict(self.pi), "raw": list(self.raw), "n": self.n_updates}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.w = {a: float(v) for a, v in state["w"].items()}
        self.pi = {a: float(v) for a, v in state["pi"].items()}
        self.raw = [float(x) for x in state["raw"]]
        self.n_updates = int(state["n"])


@dataclass
class ThompsonConfig(PolicyConfig):
    keep: int = 10  # recent rewards per arm to sample from

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep < 1:
            raise ValueError("keep must be >= 1")


class Thompson(_RewardWindowPolicy):
    """TSCL sampling teacher (Matiisen et al. 2017): draw one recent reward per arm and take
    the largest absolute value, so forgotten tasks come back; arms without rewards first."""

    name = "thompson"
    config_cls = ThompsonConfig
    config: ThompsonConfig

    def __init__(self, config: ThompsonConfig | None = None) -> None:
        super().__init__(config)
        self.rewards = RewardWindow(window=2**62, keep=self.config.keep)

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        scores = {}
        for a in arms:
            recent = self.rewards.rewards(a)
            scores[a] = abs(recent[int(rng.integers(len(recent)))]) if recent else UNTRIED
        arm = argmax(scores, rng)
        why = "untried" if scores[arm] == UNTRIED else f"largest sampled |reward| {scores[arm]:.4f}"
        return Decision(arm, scores, f"thompson: {arm!r} {why}")
