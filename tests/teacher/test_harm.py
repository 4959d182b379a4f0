"""Harm attribution: a simulated learner whose alignment drops only in one arm's rounds."""

from __future__ import annotations

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
