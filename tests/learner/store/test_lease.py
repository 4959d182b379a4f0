"""The training lease is judged by the database's clock (SQLite and PostgreSQL).

A learner's own clock can be off: tests shift the clock that ``learner.store.lease`` sees
(``datetime.now``, which it used to read) and check that nothing about the lease moves.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo

import pytest
from sqlalchemy import Engine, update

from learner.store import lease
from learner.store.db import write_transaction
from learner.store.models import LearnerLease

TTL = 30.0
HOUR = timedelta(hours=1)


def skew_local_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Make ``datetime.now`` inside ``learner.store.lease`` run ``by`` ahead (or behind)."""

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> SkewedDatetime:
            return super().now(tz) + by

    monkeypatch.setattr(lease, "datetime", SkewedDatetime)


def test_a_learner_whose_clock_runs_ahead_cannot_take_a_fresh_lease(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lease.try_acquire(engine, "a", TTL)
    skew_local_clock(monkeypatch, 24 * HOUR)  # to "b", a's heartbeat looks a day old
    assert not lease.try_acquire(engine, "b", TTL)
    assert lease.heartbeat(engine, "a")
    with engine.connect() as conn:
        held = lease.read_lease(conn)
    assert held is not None and held.holder == "a"


def test_a_learner_whose_clock_lags_writes_fresh_heartbeats(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        skew_local_clock(patch, -24 * HOUR)  # "a" believes it is yesterday
        assert lease.try_acquire(engine, "a", TTL)
        assert lease.heartbeat(engine, "a", {"step": 1})
    assert not lease.try_acquire(engine, "b", TTL)
    with engine.connect() as conn:
        age = lease.heartbeat_age(conn)
    assert age is not None and -1.0 < age < 5.0


def test_an_expired_lease_is_taken_over_by_the_database_clock(engine: Engine) -> None:
    ttl = 0.3
    assert lease.try_acquire(engine, "a", ttl)
    assert not lease.try_acquire(engine, "b", ttl)
    time.sleep(ttl + 0.2)
    assert lease.try_acquire(engine, "b", ttl)
    assert not lease.heartbeat(engine, "a")  # a lost it and must stop
    assert lease.heartbeat(engine, "b")
    assert not lease.try_acquire(engine, "a", ttl)  # b's heartbeat is fresh again


def test_a_heartbeat_far_in_the_past_is_expired(engine: Engine) -> None:
    """A heartbeat written long ago (as a dead learner's would be) frees the lease."""
    assert lease.try_acquire(engine, "a", TTL)
    old = datetime.now(lease.UTC) - timedelta(seconds=2 * TTL)
    with write_transaction(engine) as conn:
        conn.execute(update(LearnerLease).values(heartbeat_at=old))
        age = lease.heartbeat_age(conn)
    assert age is not None and 2 * TTL - 5 < age < 2 * TTL + 5
    assert lease.try_acquire(engine, "b", TTL)


def test_heartbeat_age_without_a_lease(engine: Engine) -> None:
    with engine.connect() as conn:
        assert lease.heartbeat_age(conn) is None
