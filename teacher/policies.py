"""Teacher policies by name: the baselines live here, the bandits in `bandits` and `lp_zpd`.

policy = make_policy("lp_zpd", {"c": 0.02})
decision = policy.choose(["bucket-a", "bucket-b"], rng)
policy.observe(decision.arm, accuracy=0.61)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from teacher.bandits import Exp3s, Exp3sConfig, Thompson, ThompsonConfig, Ucb, UcbConfig
from teacher.base import Decision, Policy, PolicyConfig
from teacher.lp_zpd import LpZpd, LpZpdConfig

__all__ = [
    "POLICIES",
    "Decision",
    "Exp3sConfig",
    "LpZpdConfig",
    "Policy",
    "PolicyConfig",
    "ThompsonConfig",
    "UcbConfig",
    "make_policy",
]


class Uniform(Policy):
    """Baseline: every arm equally likely."""

    name = "uniform"

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        arm = arms[int(rng.integers(len(arms)))]
        return Decision(arm, dict.fromkeys(arms, 1.0 / len(arms)), f"uniform: drew {arm!r}")


class RoundRobin(Policy):
    """Baseline: arms in name order, each after the previously chosen one."""

    name = "round_robin"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self.last: str | None = None

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        order = sorted(arms)
        later = [a for a in order if self.last is None or a > self.last]
        arm = later[0] if later else order[0]
        self.last = arm
        scores = {a: float(a == arm) for a in arms}
        return Decision(arm, scores, f"round_robin: next in name order is {arm!r}")

    def _extra_state(self) -> dict[str, Any]:
        return {"last": self.last}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.last = state["last"]


class Sequential(Policy):
    """Baseline: arms in the given order; stay on one until its probe accuracy reaches mastery."""

    name = "sequential"

    def _choose(self, arms: list[str], rng: np.random.Generator) -> Decision:
        def mastered(a: str) -> bool:
            last = self.probe.last(a)
            return last is not None and last >= self.config.mastery

        todo = [a for a in arms if not mastered(a)]
        arm = todo[0] if todo else arms[-1]
        scores = {a: float(a == arm) for a in arms}
        why = "first arm not yet mastered" if todo else "all arms mastered; staying on the last"
        return Decision(arm, scores, f"sequential: {arm!r} is the {why}")


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (Uniform, RoundRobin, Sequential, Ucb, Exp3s, Thompson, LpZpd)
}
DEFAULT_POLICY = LpZpd.name


def make_policy(name: str = DEFAULT_POLICY, config: PolicyConfig | dict | None = None) -> Policy:
    """Build a policy by registry name; `config` is its config dataclass or a dict of fields."""
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {sorted(POLICIES)}")
    cls = POLICIES[name]
    if isinstance(config, dict):
        config = cls.config_cls(**config)
    return cls(config)
