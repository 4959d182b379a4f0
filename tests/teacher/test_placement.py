"""Placement: a bucket evaluated once before its first round (``observe(..., round_end=
False)``, no training). lp_zpd then gives a bucket the model already masters no round, and
judges a bucket that cannot be learned after one round instead of two; the pre-test is no
round, so it enters no stall window. Simulated learners, seeded, several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from teacher.lp_zpd import LpZpd

SEEDS = [0, 1, 2, 3, 4]
ARMS = ["known", "noise", "learnable"]


class Stream:
    """Probe accuracy and held-out loss per arm after each of its rounds: ``known`` is
    mastered from the start, ``noise`` stays at 0 with a level loss, ``learnable`` gains
    0.1 a round with a falling loss. Evaluation noise on the loss."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rounds = dict.fromkeys(ARMS, 0)

    def evaluate(self, arm: str) -> tuple[float, float]:
        n = self.rounds[arm]
        accuracy = {"known": 0.97, "noise": 0.0, "learnable": min(0.1 * n, 1.0)}[arm]
        loss = {"known": 0.05, "noise": 3.3, "learnable": 2.0 * 0.85**n}[arm]
        return accuracy, float(loss * np.exp(self.rng.normal(0.0, 0.03)))

    def train(self, arm: str) -> tuple[float, float]:
        self.rounds[arm] += 1
        return self.evaluate(arm)


def play(seed: int, placement: bool, rounds: int = 12) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    stream, policy = Stream(rng), LpZpd()
    if placement:
        for arm in ARMS:
            policy.observe(arm, accuracy=stream.evaluate(arm)[0], round_end=False)
    for _ in range(rounds):
        arm = policy.choose(ARMS, rng).arm
        assert arm is not None  # the learnable arm is never done within 12 rounds
        accuracy, loss = stream.train(arm)
        policy.observe(arm, accuracy=accuracy, heldout_loss=loss)
    return stream.rounds


@pytest.mark.parametrize("seed", SEEDS)
def test_placement_spares_the_mastered_bucket_and_halves_noise_rounds(seed: int) -> None:
    placed = play(seed, placement=True)
    assert placed["known"] == 0, placed
    assert placed["noise"] == 1, placed
    cold = play(seed, placement=False)  # without it: two cold-start rounds each
    assert cold["known"] >= 1 and cold["noise"] == 2, cold
    assert placed["learnable"] > cold["learnable"], (placed, cold)


def test_placement_enters_no_stall_window() -> None:
    policy = LpZpd()
    policy.observe("noise", accuracy=0.0, heldout_loss=3.3, round_end=False)
    assert policy.stalls.evaluated("noise") == 0
    assert policy.is_cold("noise") and not policy.is_mastered("noise")
    policy.observe("known", accuracy=1.0, round_end=False)
    assert policy.is_mastered("known")
