"""Mastery under binomial noise: an arm at 0.92 measured on 32 probes is mastered after a
few evaluations although its window slope swings by more than flat_tol, while an arm
still climbing into the mastery zone is not. Seeded, several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from teacher.lp_zpd import LpZpd

SEEDS = list(range(10))
PROBES = 32


def measured(rng: np.random.Generator, p: float) -> float:
    return float(rng.binomial(PROBES, min(p, 1.0)) / PROBES)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_noisy_plateau_above_mastery_is_mastered_and_a_climb_is_not(seed: int) -> None:
    rng = np.random.default_rng(seed)
    policy = LpZpd()
    mastered_at = None
    climbing_mastered = False
    for n in range(12):
        policy.observe("plateau", accuracy=measured(rng, 0.95))
        # 0.5 -> 1.0 in steps of 0.05: its slope is beyond the noise at every accuracy.
        policy.observe("climb", accuracy=measured(rng, 0.5 + 0.05 * n))
        if mastered_at is None and policy.is_mastered("plateau"):
            mastered_at = n
        climbing_mastered |= n < 8 and policy.is_mastered("climb")
    assert mastered_at is not None and mastered_at <= 6, mastered_at
    assert not climbing_mastered


def test_a_fixed_tolerance_alone_would_not_master_the_plateau() -> None:
    """The noise at 0.9 on 32 probes: the slope of six evaluations has an SE near 0.013,
    above flat_tol; most windows of pure noise have |slope| > 0.01."""
    rng = np.random.default_rng(0)
    slopes = []
    for _ in range(200):
        y = rng.binomial(PROBES, 0.9, size=6) / PROBES
        slopes.append(abs(np.polyfit(np.arange(6), y, 1)[0]))
    assert np.mean(np.array(slopes) > 0.01) > 0.4
    policy = LpZpd()
    for value in (0.91, 0.88, 0.94, 0.91, 0.97, 0.94):  # slope 0.011
        policy.observe("plateau", accuracy=value)
    assert abs(policy.slopes.slope("plateau")) > policy.config.flat_tol
    assert policy.is_mastered("plateau")
