"""The learner's side of the teacher, without a model: rounds, feedback, ability, state."""

from __future__ import annotations

import numpy as np
import pytest

from learner.config import TeacherConfig
from learner.curriculum.rounds import Curriculum
from teacher.irt import estimate_ability

IDS = {"a": 1, "b": 2, "c": 3}


def play_round(cur: Curriculum, arms: list[str], step: int, accuracy: float | None) -> str:
    assert cur.needs_decision(arms)
    arm = cur.decide(arms, IDS, step).arm
    for _ in range(cur.config.round_steps):
        assert not cur.round_complete()
        cur.record_loss(1.0)
    assert cur.round_complete()
    record = cur.finish_round(step + cur.config.round_steps, accuracy, {})
    assert record.bucket_id == IDS[arm] and record.steps == cur.config.round_steps
    return arm


def test_round_records_choice_scores_and_outcome() -> None:
    cur = Curriculum(TeacherConfig(policy="round_robin", round_steps=3), seed=0)
    assert cur.needs_decision(["a", "b"])
    cur.decide(["a", "b"], IDS, step=10)
    assert not cur.needs_decision(["a", "b"])  # the round runs on
    for loss in (3.0, 2.0, 1.0):
        cur.record_loss(loss)
    record = cur.finish_round(13, accuracy=0.25, answers={7: True, 8: False})
    assert (record.step, record.steps, record.bucket_id) == (10, 3, 1)
    assert record.scores == {"a": 1.0, "b": 0.0} and "round_robin" in record.reason
    assert record.loss == 2.0 and record.accuracy == 0.25 and record.policy == "round_robin"
    assert cur.evidence == {7: True, 8: False} and cur.current is None
    with pytest.raises(RuntimeError):
        cur.finish_round(14, None, {})


def test_a_round_whose_bucket_vanishes_is_dropped() -> None:
    cur = Curriculum(TeacherConfig(policy="round_robin"), seed=0)
    cur.decide(["a", "b"], IDS, 0)
    assert cur.current is not None and cur.current.arm == "a"
    assert cur.needs_decision(["b", "c"])  # "a" was paused: choose again
    assert cur.decide(["b", "c"], IDS, 5).arm == "b"


def test_progress_feedback_steers_lp_zpd() -> None:
    """A bucket whose accuracy climbs (and whose held-out loss falls with it, as a real
    learner's does) wins the focus over one that stays at zero with a flat loss."""
    cur = Curriculum(TeacherConfig(round_steps=1), seed=1)
    skill = {"a": 0.0, "b": 0.0}
    chosen = []
    for t in range(40):
        arm = cur.decide(["a", "b"], IDS, t).arm
        assert arm is not None, "the teacher rested on a learnable bucket"
        if arm == "a":
            skill["a"] = min(1.0, skill["a"] + 0.02)  # never mastered within the test
        cur.record_loss(1.0)
        cur.finish_round(t + 1, skill[arm], {}, heldout_loss=2.0 - skill[arm])
        chosen.append(arm)
    assert chosen[10:].count("a") >= 25, chosen


def test_ability_on_the_item_scale() -> None:
    cur = Curriculum(TeacherConfig(), seed=0)
    cur.update_ability({})  # no evidence yet: stays unknown
    assert cur.ability is None
    cur.evidence = {1: True, 2: True, 3: False, 4: False}
    params = {1: (-1.0, 1.0), 2: (0.0, 1.0), 3: (1.0, 1.0), 9: (5.0, 1.0)}
    cur.update_ability(params)
    theta, se = estimate_ability(np.array([1.0, 1.0, 0.0]), np.array([-1.0, 0.0, 1.0]))
    assert cur.ability == pytest.approx(theta) and cur.ability_se == pytest.approx(se)
    cur.set_difficulties({"a": 0.3})
    policy = cur.policy
    assert policy.theta == pytest.approx(theta) and policy.difficulty == {"a": 0.3}  # type: ignore[attr-defined]


def test_state_round_trip_gives_identical_choices() -> None:
    arms = ["a", "b", "c"]
    first = Curriculum(TeacherConfig(policy="exp3s", round_steps=2), seed=3)
    for step in range(0, 20, 2):
        play_round(first, arms, step, accuracy=step / 40)
    first.decide(arms, IDS, 20)  # a round in progress is part of the state
    first.record_loss(0.5)
    second = Curriculum(TeacherConfig(policy="exp3s", round_steps=2), seed=99)
    second.load_state_dict(first.state_dict())
    assert second.current == first.current
    for cur in (first, second):
        cur.record_loss(0.5)
        cur.finish_round(22, 0.6, {})
    picks = [[play_round(c, arms, s, 0.5) for s in range(22, 42, 2)] for c in (first, second)]
    assert picks[0] == picks[1]


def test_state_of_another_policy_keeps_only_the_ability() -> None:
    old = Curriculum(TeacherConfig(policy="ucb"), seed=0)
    old.evidence, old.ability, old.ability_se = {1: True}, 0.7, 0.4
    new = Curriculum(TeacherConfig(policy="lp_zpd"), seed=0)
    new.load_state_dict(old.state_dict())
    assert new.policy.name == "lp_zpd" and new.ability == 0.7 and new.evidence == {1: True}
    snapshot = new.snapshot()
    assert snapshot["policy"] == "lp_zpd" and snapshot["learner_ability"] == 0.7
