"""Harm attribution: a simulated learner whose alignment drops only in one arm's rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teacher.harm import HarmConfig, HarmWatch


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_harmful_arm_is_quarantined_and_the_others_are_not(seed: int) -> None:
    rng = np.random.default_rng(seed)
    watch = HarmWatch(HarmConfig(window=4, max_drop=0.25))
    rate = 0.97
    watch.observe("sort", rate)  # the baseline
    for _ in range(40):
        arm = str(rng.choice(["sort", "poison", "copy"]))
        if arm == "poison":
            rate = max(0.0, rate - rng.uniform(0.1, 0.4))
        else:  # the anchors pull alignment back; noise of a 32-probe sample on top
            rate = min(1.0, rate + rng.uniform(0.0, 0.1)) + rng.normal(0, 0.03)
        watch.observe(arm, float(np.clip(rate, 0, 1)))
    assert "poison" in watch.quarantined
    assert "refusal rate" in watch.quarantined["poison"]
    assert set(watch.quarantined) == {"poison"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arms_that_all_cost_alignment_are_not_quarantined(seed: int) -> None:
    # Every arm's rounds lower the rate about as much (LoRA drift on a small model): no
    # arm stands out, so none is blamed, however large the drops.
    rng = np.random.default_rng(seed)
    watch = HarmWatch(HarmConfig(window=3, max_drop=0.4))
    rate = 1.0
    watch.observe("sort", rate)
    for _ in range(30):
        arm = str(rng.choice(["sort", "reverse", "counting"]))
        rate = float(np.clip(rate - rng.uniform(0.1, 0.3), 0, 1))
        watch.observe(arm, rate)
        if rate < 0.3:  # the gate rejected, the learner reset its weights
            watch.forget_baseline()
            rate = 1.0
            watch.observe(arm, rate)
    assert watch.quarantined == {}


def test_a_lone_arm_is_not_quarantined() -> None:
    watch = HarmWatch(HarmConfig(window=2, max_drop=0.3))
    watch.observe("a", 1.0)
    assert watch.observe("a", 0.5) is None and watch.observe("a", 0.0) is None
    assert watch.observe("b", 0.0) is None  # now there is a comparison: b cost nothing
    reason = watch.observe("a", 0.0)  # a's last two rounds: -0.5 + 0.0 vs b's 0.0
    assert reason is not None and "other buckets' rounds by 0.00" in reason


def test_no_baseline_after_the_weights_change() -> None:
    watch = HarmWatch(HarmConfig(window=2, max_drop=0.3))
    assert watch.observe("a", 0.9) is None
    watch.forget_baseline()
    assert watch.observe("a", 0.1) is None  # a rollback happened in between: not charged
    assert watch.observe("a", 0.0) is None  # -0.1 only
    assert watch.observe("b", 0.0) is None
    assert watch.observe("a", -0.0) is None
    assert watch.quarantined == {}


def test_state_round_trip_and_release() -> None:
    watch = HarmWatch(HarmConfig(window=3, max_drop=0.2))
    watch.observe("a", 1.0)
    watch.observe("b", 1.0)
    assert watch.observe("a", 0.7) is not None
    copy = HarmWatch(HarmConfig(window=3, max_drop=0.2))
    copy.load_state_dict(watch.state_dict())
    assert copy.quarantined == watch.quarantined and copy.last_rate == 0.7
    copy.release("a")
    assert copy.quarantined == {}
    with pytest.raises(ValueError):
        HarmConfig(window=0)


def _simulate(watch: HarmWatch, rng: np.random.Generator, rounds: int, poison: set[str]) -> dict:
    """A learner that picks uniformly among the arms not in quarantine; a poison arm's round
    lowers the watched rate by 0.2-0.4, the others' raise it a little (anchors), with the
    noise of a 32-probe sample. Each round takes 10 s. Returns the rounds per arm."""
    arms, rate, now = ["learn", "noise", *sorted(poison)], 0.95, 0.0
    counts = dict.fromkeys(arms, 0)
    watch.observe("learn", rate, now)
    for _ in range(rounds):
        now += 10.0
        watch.release_due(now)
        allowed = [a for a in arms if a not in watch.quarantined]
        arm = str(rng.choice(allowed))
        counts[arm] += 1
        step = -rng.uniform(0.2, 0.4) if arm in poison else rng.uniform(0.0, 0.08)
        rate = float(np.clip(rate + step + rng.normal(0, 0.04), 0, 1))
        watch.observe(arm, rate, now)
    return counts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_poison_released_on_probation_is_caught_again_and_tried_ever_less(seed: int) -> None:
    watch = HarmWatch(HarmConfig(window=3, max_drop=0.4, probation_rounds=10))
    counts = _simulate(watch, np.random.default_rng(seed), 300, {"poison"})
    assert watch.strikes.get("poison", 0) >= 2  # released, and quarantined again
    assert counts["poison"] < 0.2 * sum(counts.values())
    assert "learn" not in watch.quarantined and "noise" not in watch.quarantined


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wrongly_quarantined_arm_comes_back_and_stays(seed: int) -> None:
    """The failure seen on the service: with two arms, a noisy comparison quarantined the
    learnable one. On probation its harmless rounds keep it out of quarantine."""
    watch = HarmWatch(HarmConfig(window=3, max_drop=0.4, probation_rounds=10))
    watch.observe("learn", 0.95, 0.0)
    for rate in (0.95, 0.9):
        watch.observe("noise", rate, 0.0)
    for rate in (0.6, 0.45, 0.4):
        watch.observe("learn", rate, 0.0)
    assert "learn" in watch.quarantined
    counts = _simulate(watch, np.random.default_rng(seed), 200, set())
    assert "learn" not in watch.quarantined
    assert counts["learn"] > 0.35 * sum(counts.values())


def test_probation_by_time_when_nothing_else_trains_and_terms_double() -> None:
    watch = HarmWatch(HarmConfig(window=1, max_drop=0.3, probation_seconds=100.0))
    watch.observe("b", 1.0, 0.0)
    watch.observe("b", 1.0, 0.0)
    assert watch.observe("a", 0.5, 0.0) is not None
    assert watch.release_due(99.0) == []
    assert watch.release_due(100.0) == ["a"]
    watch.observe("a", 0.1, 100.0)  # harmful again: the second term is twice as long
    assert "a" in watch.quarantined and watch.strikes["a"] == 2
    assert watch.release_due(299.0) == [] and watch.release_due(300.0) == ["a"]
    restored = HarmWatch(watch.config)
    watch.observe("b", 0.9, 300.0)
    assert watch.observe("a", 0.4, 300.0) is not None
    restored.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert restored.quarantined == watch.quarantined and restored.strikes == {"a": 3}
    assert restored.release_due(300.0 + 399.0) == [] and restored.release_due(700.0) == ["a"]
