"""Simulated learner: learnable, unlearnable (noise) and mastered arms."""

from __future__ import annotations

import numpy as np
import pytest

from teacher.policies import make_policy

LEARNABLE = ["learn0", "learn1", "learn2"]
NOISE = ["noise0", "noise1"]
MASTERED = ["mastered0"]
ARMS = LEARNABLE + NOISE + MASTERED
WARMUP = 20
MASTERY = 0.9
PROBES = 400


def simulate(policy_name: str, seed: int, rounds: int = 300) -> tuple[int, float]:
    """Run until every learnable arm is mastered. Returns (round reached, share of
    post-warm-up rounds spent on noise and mastered arms before that)."""
    rng = np.random.default_rng(seed)
    skill = dict.fromkeys(LEARNABLE + NOISE, 0.25) | dict.fromkeys(MASTERED, 0.95)
    # 400 probes per evaluation; lp_zpd's stall test is told so (its noise model).
    options = {"stall": {"probes": PROBES}} if policy_name == "lp_zpd" else None
    policy = make_policy(policy_name, options)
    if policy_name == "lp_zpd":  # difficulties as an IRT fit would give them
        policy.set_ability(0.0)
        for arms, b in ((LEARNABLE, 0.0), (NOISE, 4.0), (MASTERED, -4.0)):
            for a in arms:
                policy.set_difficulty(a, b)
    wasted = 0
    for t in range(1, rounds + 1):
        arm = policy.choose(ARMS, rng).arm
        if arm is None:  # a rest: no arm trained this round
            continue
        if arm in LEARNABLE:
            skill[arm] += 0.12 * (1.0 - skill[arm])
        elif t > WARMUP:
            wasted += 1
        policy.observe(arm, accuracy=rng.binomial(PROBES, skill[arm]) / PROBES)
        if all(skill[a] >= MASTERY for a in LEARNABLE):
            return t, wasted / max(t - WARMUP, 1)
    return rounds + 1, wasted / (rounds - WARMUP)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_lp_zpd_avoids_noise_and_mastered(seed: int) -> None:
    _, wasted = simulate("lp_zpd", seed)
    assert wasted < 0.15


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_lp_zpd_masters_faster_than_uniform(seed: int) -> None:
    lp_rounds, _ = simulate("lp_zpd", seed)
    uniform_rounds, _ = simulate("uniform", seed)
    assert lp_rounds < uniform_rounds


def test_report_rounds() -> None:
    """Average over seeds: lp_zpd needs clearly fewer rounds than uniform."""
    lp = np.mean([simulate("lp_zpd", s)[0] for s in range(5)])
    uni = np.mean([simulate("uniform", s)[0] for s in range(5)])
    assert lp < 0.8 * uni
