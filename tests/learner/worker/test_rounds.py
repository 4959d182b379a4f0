"""The teacher's rounds in the learner loop, on SQLite and PostgreSQL: an idle teacher's
rests are one decision row per rest period, and new data wakes a mastered bucket."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from learner.config import TeacherConfig
from learner.curriculum import rounds as curriculum_rounds
from learner.curriculum.rounds import Curriculum
from learner.store.buckets import BucketInfo
from learner.store.db import write_transaction
from learner.store.teacher import recent_decisions
from learner.worker.rounds import RoundKeeper

ARMS = ["copy", "sort"]
BUCKETS = {name: BucketInfo(i + 1, name, "task", "active") for i, name in enumerate(ARMS)}


class Clock:
    """time.monotonic for the curriculum, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(curriculum_rounds.time, "monotonic", fake)
    return fake


def mastered_keeper(engine: Engine) -> RoundKeeper:
    """A keeper whose lp_zpd teacher has seen both arms mastered: it can only rest."""
    curriculum = Curriculum(TeacherConfig(policy="lp_zpd", rest_seconds=30), seed=0)
    for arm in ARMS:
        for _ in range(2):
            curriculum.policy.observe(arm, accuracy=1.0)
    trainer: Any = None  # a rest trains and evaluates nothing
    return RoundKeeper(engine, curriculum, trainer, lambda: write_transaction(engine), bool)


def test_an_hour_of_rest_is_one_decision_row(engine: Engine, clock: Clock) -> None:
    keeper = mastered_keeper(engine)
    sizes = dict.fromkeys(ARMS, 100)
    for _ in range(120):  # an hour in steps of 30 s, each past the rest's end
        assert keeper.focus(ARMS, BUCKETS, 500, None, sizes) is None
        clock.now += 31
    with engine.connect() as conn:
        rows = recent_decisions(conn, 1000)
    assert len(rows) == 1, [r.reason for r in rows]
    rest = rows[0]
    assert rest.bucket is None and rest.steps == 0 and "mastered" in rest.reason
    assert rest.renewed_at is not None and rest.renewed_at >= rest.created_at


def test_new_data_in_a_mastered_bucket_wakes_it(engine: Engine, clock: Clock) -> None:
    keeper = mastered_keeper(engine)
    sizes = dict.fromkeys(ARMS, 100)
    assert keeper.focus(ARMS, BUCKETS, 500, None, sizes) is None  # resting
    clock.now += 5  # mid-rest: the rest's end has not come
    sizes["sort"] = 150  # new examples arrive in a mastered bucket
    assert keeper.focus(ARMS, BUCKETS, 500, None, sizes) == "sort"
    decision = keeper.curriculum.current
    assert decision is not None and "new data in a mastered bucket" in decision.reason
    # The round's result settles it again: mastered once more, so the teacher rests, and
    # that is a new rest period (a round came between), so a new row.
    keeper.curriculum.finish_round(520, 1.0, {})
    clock.now += 31
    assert keeper.focus(ARMS, BUCKETS, 520, None, sizes) is None
    with engine.connect() as conn:
        rows = recent_decisions(conn, 10)
    assert [r.bucket for r in rows] == [None, None], rows  # the round's row is end_round's
