"""lp_zpd on real-stream situations, with simulated learners: stalled arms, resting, slow
starters, forgetting and wake-ups (teacher.stall). Seeded; several seeds each."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from teacher.lp_zpd import LpZpd, LpZpdConfig
from teacher.stall import StallConfig, StallTracker

SEEDS = [0, 1, 2, 3, 4]
PROBES = 32  # probes per round-end evaluation, as in the service


class Learner:
    """Skill per arm; a round on an arm moves its skill by the arm's learning rule."""

    def __init__(self, rng: np.random.Generator, rules: dict[str, str]) -> None:
        self.rng, self.rules = rng, rules
        self.skill = dict.fromkeys(rules, 0.0)
        self.rounds: Counter[str] = Counter()

    def train(self, arm: str) -> float:
        self.rounds[arm] += 1
        rule, n = self.rules[arm], self.rounds[arm]
        if rule == "fast":
            self.skill[arm] += 0.25 * (1.0 - self.skill[arm])
        elif rule == "slow" and n > 5:  # nothing moves for 5 rounds, then it learns
            self.skill[arm] += 0.2 * (1.0 - self.skill[arm])
        # "noise": random targets, never learned
        return self.evaluate(arm)

    def evaluate(self, arm: str) -> float:
        return float(self.rng.binomial(PROBES, self.skill[arm]) / PROBES)


def run(policy: LpZpd, learner: Learner, rng: np.random.Generator, rounds: int) -> list:
    chosen = []
    arms = list(learner.rules)
    for _ in range(rounds):
        arm = policy.choose(arms, rng).arm
        chosen.append(arm)
        if arm is not None:
            policy.observe(arm, accuracy=learner.train(arm))
    return chosen


@pytest.mark.parametrize("seed", SEEDS)
def test_a_noise_arm_stalls_instead_of_absorbing_the_budget(seed: int) -> None:
    """The service's failure: once the learnable arm is mastered, the noise arm took 96% of
    the rounds. Now it gets a bounded budget and the policy rests."""
    rng = np.random.default_rng(seed)
    learner = Learner(rng, {"learn": "fast", "noise": "noise"})
    policy = LpZpd()
    chosen = run(policy, learner, rng, 200)
    assert learner.skill["learn"] > 0.9
    # Patience (4 + 6 * (1 - 0.5) = 7 evaluations) plus a few decaying revisits.
    assert chosen.count("noise") <= 20, Counter(chosen)
    assert policy.stalls.is_stalled("noise")
    assert chosen[-50:].count(None) >= 40  # resting, not training on noise


@pytest.mark.parametrize("seed", SEEDS)
def test_with_nothing_learnable_the_policy_rests(seed: int) -> None:
    rng = np.random.default_rng(seed)
    learner = Learner(rng, {"noise0": "noise", "noise1": "noise"})
    policy = LpZpd()
    chosen = run(policy, learner, rng, 120)
    assert sum(a is not None for a in chosen) <= 35, Counter(chosen)
    decision = policy.choose(["noise0", "noise1"], np.random.default_rng(99))
    if decision.arm is None:
        assert "rest: no arm is learnable now" in decision.reason
        assert "stalled: noise0, noise1" in decision.reason


def test_revisits_of_a_stalled_arm_decay() -> None:
    """Revisits never stop (a bucket may become learnable) but grow rarer: over five seeds,
    rounds 1,050-1,300 have fewer than rounds 50-300."""
    early = late = 0
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        chosen = run(LpZpd(), Learner(rng, {"noise": "noise"}), rng, 1300)
        early += chosen[50:300].count("noise")
        late += chosen[1050:1300].count("noise")
        assert chosen[1050:].count("noise") <= 12
    assert 0 < late < early, (early, late)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_starter_gets_enough_rounds_to_be_learned(seed: int) -> None:
    """An arm whose accuracy moves only after 5 rounds is learned, not dropped after its two
    cold-start rounds; the noise arm beside it still stalls."""
    rng = np.random.default_rng(seed)
    learner = Learner(rng, {"fast": "fast", "slow": "slow", "noise": "noise"})
    policy = LpZpd()
    run(policy, learner, rng, 150)
    assert learner.skill["slow"] > 0.8, learner.rounds
    assert policy.stalls.is_stalled("noise")


@pytest.mark.parametrize("seed", SEEDS)
def test_forgetting_brings_a_mastered_arm_back(seed: int) -> None:
    rng = np.random.default_rng(seed)
    learner = Learner(rng, {"learn": "fast", "noise": "noise"})
    policy = LpZpd()
    run(policy, learner, rng, 60)
    assert policy.is_mastered("learn")
    # Training elsewhere made the lineage forget: a re-evaluation shows the drop.
    learner.skill["learn"] = 0.5
    policy.observe("learn", accuracy=learner.evaluate("learn"))
    policy.observe("learn", accuracy=learner.evaluate("learn"))
    chosen = run(policy, learner, rng, 5)
    assert chosen.count("learn") >= 3, chosen


def test_new_data_wakes_a_stalled_arm() -> None:
    rng = np.random.default_rng(0)
    learner = Learner(rng, {"noise": "noise"})
    policy = LpZpd()
    policy.note_size("noise", 400)
    run(policy, learner, rng, 30)
    assert policy.stalls.is_stalled("noise")
    assert not policy.note_size("noise", 410)  # +2.5%: not enough to wake it
    assert policy.note_size("noise", 800)
    decision = policy.choose(["noise"], rng)
    assert decision.arm == "noise"
    assert "woken up by new data: 400 -> 800 train examples" in decision.reason


def test_a_difficulty_change_wakes_a_stalled_arm() -> None:
    tracker = StallTracker()
    tracker.note_difficulty("a", 2.0)
    for _ in range(10):
        tracker.observe("a", 0.0, p=0.5, mastery=0.9)
    assert tracker.is_stalled("a")
    assert not tracker.note_difficulty("a", 2.3)
    assert tracker.note_difficulty("a", 1.0)
    assert not tracker.is_stalled("a") and "difficulty changed" in tracker.woken["a"]


def test_patience_grows_with_predicted_difficulty() -> None:
    tracker = StallTracker(StallConfig(min_rounds=4, slow_start_rounds=6))
    assert tracker.patience(1.0) == 4
    assert tracker.patience(0.5) == 7
    assert tracker.patience(0.0) == 10


def test_state_round_trip_keeps_stalls() -> None:
    rng = np.random.default_rng(3)
    learner = Learner(rng, {"learn": "fast", "noise": "noise"})
    policy = LpZpd(LpZpdConfig(stall={"min_rounds": 3, "slow_start_rounds": 0}))
    run(policy, learner, rng, 40)
    restored = LpZpd(LpZpdConfig(stall={"min_rounds": 3, "slow_start_rounds": 0}))
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict(), allow_nan=False)))
    assert restored.stalls.stalled == policy.stalls.stalled
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [policy.choose(["learn", "noise"], a).arm for _ in range(20)] == [
        restored.choose(["learn", "noise"], b).arm for _ in range(20)
    ]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        StallConfig(min_rounds=1)
    with pytest.raises(ValueError):
        StallConfig(explore=1.5)
    with pytest.raises(TypeError):
        LpZpdConfig(stall={"no_such_field": 1})


def _reset_midway(restart: bool) -> StallTracker:
    """Four evaluations with a falling held-out loss, a reset of the weights (the loss is
    back up), then seven more falling steadily: a bucket that is being learned."""
    tracker = StallTracker()
    for loss in (1.20, 1.15, 1.10, 1.05):
        tracker.observe("learn", 0.2, p=0.5, mastery=0.9, loss=loss)
    if restart:
        assert tracker.restart_progressing("the weights were reset") == ["learn"]
    for loss in (1.20, 1.15, 1.10, 1.05, 1.00, 0.95, 0.90):
        tracker.observe("learn", 0.2, p=0.5, mastery=0.9, loss=loss)
    return tracker


def test_a_reset_restarts_the_window_of_an_arm_that_was_progressing() -> None:
    """Evaluations of abandoned weights and of the reset ones in one window look like no
    progress (a learnable bucket stalled so in the service); after the restart the window
    holds only the new weights' evaluations."""
    assert _reset_midway(restart=False).is_stalled("learn")  # what happened before
    tracker = _reset_midway(restart=True)
    assert not tracker.is_stalled("learn")
    assert tracker.woken["learn"] == "the weights were reset"


@pytest.mark.parametrize("seed", SEEDS)
def test_frequent_resets_still_let_a_noise_arm_stall(seed: int) -> None:
    """A reset every 6 rounds (as after 3 rejected candidates) restarts the learnable
    arm's window but not the noise arm's: noise still stalls."""
    rng = np.random.default_rng(seed)
    learner = Learner(rng, {"noise": "noise", "learn": "slow"})
    policy = LpZpd()
    for _ in range(10):
        run(policy, learner, rng, 6)
        policy.weights_replaced("the weights were reset after rejections")
    assert policy.stalls.is_stalled("noise"), policy.stalls.state_dict()
    assert not policy.stalls.is_stalled("learn")
