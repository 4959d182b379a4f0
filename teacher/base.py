"""Shared pieces of the teacher policies: decisions, configs, the base class, reward windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from teacher.progress import EmaProgress, ProbeProgress

# Score of an arm that must be tried first. Finite, so decisions stay strict JSON.
UNTRIED = 1e6


@dataclass(frozen=True)
class Decision:
    """One teacher decision: the focus arm, the score of every offered arm, and why.

    ``arm`` None is a decision to rest: no arm is worth training now (``lp_zpd`` when every
    arm is mastered or stalled)."""

    arm: str | None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass
class PolicyConfig:
    """Settings every policy shares: how accuracy and loss become a progress reward."""

    alp_k: int = 1  # ALP compares score_t with score_{t-k}
    ema_fast: float = 0.5
    ema_slow: float = 0.1
    mastery: float = 0.9  # probe accuracy at which an arm counts as mastered

    def __post_init__(self) -> None:
        if self.alp_k < 1:
            raise ValueError("alp_k must be >= 1")
        if not 0.0 < self.ema_slow < self.ema_fast <= 1.0:
            raise ValueError("need 0 < ema_slow < ema_fast <= 1")
        if not 0.0 < self.mastery <= 1.0:
            raise ValueError("mastery must be in (0, 1]")


def argmax(scores: dict[str, float], rng: np.random.Generator) -> str:
    """Arm with the highest score; ties broken at random with the given generator."""
    best = max(scores.values())
    tied = [a for a, s in scores.items() if s >= best - 1e-12]
    return tied[0] if len(tied) == 1 else tied[int(rng.integers(len(tied)))]


def check_arms(arms: list[str]) -> list[str]:
    if not arms:
        raise ValueError("no arms to choose from")
    if len(set(arms)) != len(arms):
        raise ValueError("duplicate arm names")
    return list(arms)


class Policy:
    """Base class. `choose` picks a focus arm; `observe`/`update` feed results back."""

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{self.name} needs a {self.config_cls.__name__}")
        self.probe = ProbeProgress(k=self.config.alp_k)
        self.loss = EmaProgress(self.config.ema_fast, self.config.ema_slow)
        self.t = 0  # decisions made so far

    def choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        arms = check_arms(arms)
        self.t += 1
        decision = self._choose(arms, rng)
        if decision.arm is None:
            # A rest trains nothing: it must not age the reward windows (which count
            # decisions), or a long rest would erase every arm's progress history.
            self.t -= 1
        return decision

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        raise NotImplementedError

    def observe(
        self,
        arm: str,
        accuracy: float | None = None,
        loss: float | None = None,
        heldout_loss: float | None = None,
        round_end: bool = True,
    ) -> float | None:
        """Turn a probe accuracy and/or training loss into a progress reward and learn from it.

        Accuracy-based progress wins when both are given. ``heldout_loss`` (the probes'
        mean target loss, measured with the accuracy) is extra evidence of progress that
        only some policies use. ``round_end`` False marks a re-evaluation outside the arm's
        rounds (at a candidate). Returns the reward, or None while there is too little
        history to measure progress.
        """
        reward = None
        if loss is not None:
            reward = abs(self.loss.observe(arm, loss))
        if accuracy is not None:
            acc_reward = self._accuracy_reward(arm, accuracy, heldout_loss, round_end)
            reward = acc_reward if acc_reward is not None else reward
        if reward is not None:
            self.update(arm, reward)
        return reward

    def _accuracy_reward(
        self, arm: str, accuracy: float, heldout_loss: float | None, round_end: bool
    ) -> float | None:
        return self.probe.observe(arm, accuracy)

    def update(self, arm: str, reward: float) -> None:
        """Feed a reward for `arm` (the baselines ignore it)."""

    def set_difficulty(self, arm: str, b: float) -> None:
        """Bucket difficulty b on the IRT scale (only difficulty-aware policies use it)."""

    def set_ability(self, theta: float | None) -> None:
        """The learner's IRT ability (only difficulty-aware policies use it)."""

    def note_size(self, arm: str, train_examples: int) -> bool:
        """The arm's current number of train examples; True when new data changed the
        policy's view of it (a resting policy should then be asked again)."""
        return False

    def wake(self, arm: str, why: str) -> None:
        """Something outside the policy's evidence makes the arm worth trying again (for
        example, a release from quarantine); policies that give up on arms reconsider."""

    def weights_replaced(self, why: str) -> None:
        """The learner's weights were replaced (reset, rollback): policies that give up on
        arms judge the progress seen on the abandoned weights (see ``teacher.stall``)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "t": self.t,
            "probe": self.probe.state_dict(),
            "loss": self.loss.state_dict(),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["name"] != self.name:
            raise ValueError(f"state is for {state['name']!r}, not {self.name!r}")
        self.t = int(state["t"])
        self.probe.load_state_dict(state["probe"])
        self.loss.load_state_dict(state["loss"])
        self._load_extra(state["extra"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        pass


class RewardWindow:
    """Recent rewards per arm: kept for `window` rounds (and at most `keep` per arm),
    weighted by gamma**age. gamma = 1 is a sliding window, gamma < 1 discounts."""

    def __init__(self, window: int, gamma: float = 1.0, keep: int = 1000) -> None:
        self.window, self.gamma, self.keep = window, gamma, keep
        self.entries: dict[str, list[list[float]]] = {}  # arm -> [[round, reward], ...]

    def add(self, arm: str, t: int, reward: float) -> None:
        e = self.entries.setdefault(arm, [])
        e.append([float(t), float(reward)])
        del e[: -self.keep]

    def prune(self, t: int) -> None:
        for arm, e in list(self.entries.items()):
            e[:] = [x for x in e if t - x[0] < self.window]
            if not e:
                del self.entries[arm]

    def stats(self, arm: str, t: int) -> tuple[float, float]:
        """(discounted count, discounted mean) of the arm's rewards; (0, 0) if none."""
        e = self.entries.get(arm)
        if not e:
            return 0.0, 0.0
        rounds, rewards = np.asarray(e).T
        w = self.gamma ** (t - rounds)
        n = float(w.sum())
        return n, float(w @ rewards / n) if n > 0 else 0.0

    def rewards(self, arm: str) -> list[float]:
        return [r for _, r in self.entries.get(arm, [])]

    def state_dict(self) -> dict[str, Any]:
        return {"entries": {a: [list(x) for x in e] for a, e in self.entries.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = {
            a: [[float(t), float(r)] for t, r in e] for a, e in state["entries"].items()
        }


def ucb_bonus(c: float, total: float, n: float) -> float:
    """Exploration bonus c * sqrt(log N / n) (Auer et al. 2002); n + 1 keeps it finite."""
    return c * math.sqrt(math.log1p(total) / (n + 1.0))
