"""The held-out loss as lp_zpd's progress signal and stall test, with simulated learners
whose probe accuracy sits at zero: a slow learner (loss falling a few percent a round) and
a noise bucket (loss falls while the model learns the targets' alphabet, then levels off).
Seeded; several seeds each. Also: bounded windows, and re-evaluations kept out of them."""

from __future__ import annotations

import numpy as np
import pytest

from teacher.lp_zpd import LpZpd, LpZpdConfig
from teacher.progress import loss_trend
from teacher.stall import StallConfig, StallTracker

SEEDS = [0, 1, 2, 3, 4]


class LossLearner:
    """Held-out loss per arm after each of its rounds; accuracy stays 0 on every arm."""

    def __init__(self, rng: np.random.Generator, slow_rate: float = 0.05) -> None:
        self.rng, self.slow_rate = rng, slow_rate
        self.rounds = {"slow": 0, "noise": 0}

    def train(self, arm: str) -> float:
        self.rounds[arm] += 1
        n = self.rounds[arm]
        # slow: a few percent a round, for as long as the test runs; noise (random
        # targets): the alphabet is learned in a few rounds, then nothing.
        slow = arm == "slow"
        loss = 2.0 * (1.0 - self.slow_rate) ** n if slow else 3.3 + 0.5 * np.exp(-n)
        return float(loss * np.exp(self.rng.normal(0.0, 0.03)))  # evaluation noise


def play(policy: LpZpd, learner: LossLearner, rng: np.random.Generator, rounds: int) -> list:
    chosen = []
    for _ in range(rounds):
        arm = policy.choose(["slow", "noise"], rng).arm
        chosen.append(arm)
        if arm is not None:
            policy.observe(arm, accuracy=0.0, heldout_loss=learner.train(arm))
    return chosen


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_learner_with_falling_loss_is_not_stalled_while_noise_is(seed: int) -> None:
    rng = np.random.default_rng(seed)
    learner = LossLearner(rng)
    tracker = StallTracker()
    stalled_at: dict[str, int] = {}
    for n in range(1, 21):  # 20 round-end evaluations of each, accuracy 0 throughout
        for arm in ("slow", "noise"):
            if tracker.observe(arm, 0.0, 0.5, 0.9, loss=learner.train(arm)) is not None:
                stalled_at.setdefault(arm, n)
    assert "slow" not in stalled_at, tracker.stalled
    # Noise stalls once the alphabet's early fall has left the window (patience 7).
    assert stalled_at["noise"] <= 12, stalled_at


@pytest.mark.parametrize("seed", SEEDS)
def test_lp_zpd_gives_the_slow_learner_most_rounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    learner = LossLearner(rng)
    policy = LpZpd()
    chosen = play(policy, learner, rng, 60)
    assert chosen.count("slow") > 3 * chosen.count("noise"), learner.rounds
    assert not policy.stalls.is_stalled("slow")


@pytest.mark.parametrize("seed", SEEDS)
def test_the_loss_signal_ranks_a_learning_arm_above_noise_within_a_few_rounds(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    learner = LossLearner(rng)
    scores = {}
    for weight in (0.0, 1.0):
        policy = LpZpd(LpZpdConfig(loss_weight=weight))
        for _ in range(4):  # four rounds each, alternating, accuracy 0 throughout
            for arm in ("slow", "noise"):
                policy.observe(arm, accuracy=0.0, heldout_loss=learner.train(arm))
        scores[weight] = policy.choose(["slow", "noise"], rng).scores
    # Accuracy alone cannot tell them apart (both at zero); the loss can.
    assert scores[0.0]["slow"] == pytest.approx(scores[0.0]["noise"])
    # (A small margin: within its patience budget an arm's mean progress is shrunk
    # towards the optimistic prior, so early evidence moves the score a little.)
    assert scores[1.0]["slow"] > scores[1.0]["noise"] + 0.001, scores[1.0]


def test_the_trend_is_robust_to_one_outlier_and_flat_noise_is_not_falling() -> None:
    rng = np.random.default_rng(0)
    falling = [2.0 * 0.95**n for n in range(8)]
    falling[3] *= 3.0  # one bad evaluation (a reset, an odd sample)
    trend = loss_trend(falling)
    assert trend is not None and trend.falling and trend.progress > 0.03
    false_alarms = 0
    for _ in range(400):
        level = 3.3 * np.exp(rng.normal(0.0, 0.03, size=8))
        level_trend = loss_trend(list(level))
        assert level_trend is not None
        false_alarms += level_trend.falling
    # A 90% interval: about 5% of level series look falling (one-sided).
    assert false_alarms / 400 < 0.1
    assert loss_trend([1.0, 0.9]) is None  # too few points for a trend


def test_reevaluations_do_not_enter_the_stall_window_but_show_forgetting() -> None:
    tracker = StallTracker()
    for _ in range(20):  # candidates re-evaluate an arm that is never a focus
        assert tracker.observe("a", 0.0, 0.5, 0.9, round_end=False) is None
    assert tracker.evaluated("a") == 0 and not tracker.is_stalled("a")
    for _ in range(3):
        tracker.observe("a", 0.6, 0.5, 0.9)
    tracker.observe("a", 0.2, 0.5, 0.9, round_end=False)  # forgotten, seen at a candidate
    assert tracker.evaluated("a") == 0 and "forgetting" in tracker.woken["a"]


def test_windows_stay_bounded_over_a_long_run() -> None:
    tracker = StallTracker(StallConfig())
    for n in range(1000):  # a mastered arm evaluated again and again
        tracker.observe("a", 0.95, 0.5, 0.9, loss=0.05 + 0.01 * (n % 3))
    assert not tracker.is_stalled("a")
    longest = tracker.config.longest_window
    assert len(tracker.since["a"]) == longest and len(tracker.losses["a"]) == longest
    assert tracker.evaluated("a") == 1000


@pytest.mark.parametrize("seed", SEEDS)
def test_a_noisy_plateau_stalls_and_a_steady_climb_does_not(seed: int) -> None:
    """32 probes per evaluation: a bucket stuck at 0.5 swings by +-0.09 between evaluations,
    which a best-minus-first rule took for progress (and its dips for forgetting); a
    climb of 0.05 per round, with the falling loss that comes with it, is real."""
    rng = np.random.default_rng(seed)
    tracker = StallTracker()
    plateau_stalled = climb_stalled = False
    for n in range(20):
        plateau = rng.binomial(32, 0.5) / 32
        climb = rng.binomial(32, min(0.85, 0.1 + 0.05 * n)) / 32
        flat, falling = (np.exp(rng.normal(0.0, 0.03)) * x for x in (1.0, 2.0 * 0.95**n))
        plateau_stalled |= tracker.observe("plateau", plateau, 0.5, 0.9, loss=flat) is not None
        climb_stalled |= tracker.observe("climb", climb, 0.5, 0.9, loss=falling) is not None
    assert plateau_stalled
    assert not climb_stalled
