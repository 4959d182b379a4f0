"""Retention rules and the learner's housekeeper, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select, update

from learner.config import RetentionConfig
from learner.store import control, registry
from learner.store.buckets import list_buckets
from learner.store.db import write_transaction
from learner.store.evaluations import matrix_cells, record_results
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import (
    ControlCommand,
    Evaluation,
    Example,
    ProbeResult,
    TeacherDecision as Decision,
)
from learner.store.retention import (
    prune_commands,
    prune_decisions,
    prune_evaluations,
    prune_retired_probe_results,
)
from learner.store.teacher import DecisionRecord, record_decision
from learner.worker.housekeeping import Housekeeper

NOW = datetime.now(UTC)


def count(engine: Engine, table: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def add_decisions(engine: Engine, n: int, age: timedelta) -> None:
    with write_transaction(engine) as conn:
        for step in range(n):
            record = DecisionRecord(step, None, "lp_zpd", {}, "rest", None, None, None, None)
            record_decision(conn, record)
        conn.execute(
            update(Decision)
            .where(Decision.id > conn.execute(select(func.max(Decision.id))).scalar_one() - n)
            .values(created_at=NOW - age)
        )


def test_decisions_expire_by_age_and_by_row_cap(engine: Engine) -> None:
    add_decisions(engine, 12, age=timedelta(days=40))
    add_decisions(engine, 3, age=timedelta(hours=1))
    # A rest renewed yesterday is active, however old its creation.
    with write_transaction(engine) as conn:
        oldest = conn.execute(select(func.min(Decision.id))).scalar_one()
        conn.execute(
            update(Decision).where(Decision.id == oldest).values(renewed_at=NOW - timedelta(1))
        )
    cutoff = NOW - timedelta(days=30)
    deleted = []
    while True:  # batches of 5: 11 expired rows take three
        with write_transaction(engine) as conn:
            deleted.append(prune_decisions(conn, cutoff, keep_rows=100, batch=5))
        if deleted[-1] < 5:
            break
    assert deleted == [5, 5, 1]
    assert count(engine, Decision) == 4
    with write_transaction(engine) as conn:  # the cap: the newest 2 of the 4 stay
        assert prune_decisions(conn, cutoff, keep_rows=2, batch=100) == 2
        newest = conn.execute(select(func.max(Decision.id))).scalar_one()
        kept = sorted(conn.execute(select(Decision.id)).scalars())
    assert kept == [newest - 1, newest]


def test_newest_decision_survives_any_age(engine: Engine) -> None:
    add_decisions(engine, 3, age=timedelta(days=400))
    with write_transaction(engine) as conn:
        assert prune_decisions(conn, NOW, keep_rows=1, batch=100) == 2
    assert count(engine, Decision) == 1


def seed_versions(engine: Engine) -> dict[str, int]:
    """Probes of two buckets answered by the base and versions 1 (promoted), 2 (retired)
    and 3 (rejected), each evaluated twice (the second evaluation supersedes the first)."""
    with write_transaction(engine) as conn:
        for name in ("a", "b"):
            probes = [NewExample(f"{name} probe {i}", f"t{i}") for i in range(4)]
            ingest_batch(conn, name, probes, grader="exact", probe_tenths=10)
        for version, status in ((1, "promoted"), (2, "retired"), (3, "rejected")):
            registry.insert_version(
                conn, version=version, parent_version=None, base_model="m", path=f"v{version}",
                sha256="0" * 64, train_step=version * 10, status=status, provenance={},
                metrics={}, gate_report=None,
            )  # fmt: skip
        rows = conn.execute(select(Example.id, Example.bucket_id).order_by(Example.id)).all()
        for version in (None, 1, 2, 3):
            for bucket_id in {r.bucket_id for r in rows}:
                ids = [r.id for r in rows if r.bucket_id == bucket_id]
                for half in (ids[:2], ids[2:]):  # two evaluations: two cells per bucket
                    answers = [(i, (i + (version or 0)) % 2 == 0, "x") for i in half]
                    record_results(conn, version, bucket_id, answers, step=10)
    return {"probes": len(rows)}


def test_retired_versions_lose_their_rows_and_kept_ones_keep_their_matrix(
    engine: Engine,
) -> None:
    probes = seed_versions(engine)["probes"]
    with engine.connect() as conn:
        before, listing = matrix_cells(conn), list_buckets(conn)
    assert count(engine, ProbeResult) == 4 * probes and count(engine, Evaluation) == 16
    with write_transaction(engine) as conn:
        assert prune_retired_probe_results(conn, batch=3) == 3  # a batch at a time
    with write_transaction(engine) as conn:
        assert prune_retired_probe_results(conn, batch=100) == probes - 3
        assert prune_evaluations(conn, batch=100) == 4 + 6  # v2's 4 cells, 6 superseded
        assert prune_retired_probe_results(conn, batch=100) == 0
        assert prune_evaluations(conn, batch=100) == 0
    with engine.connect() as conn:
        after = matrix_cells(conn)
        assert list_buckets(conn) == listing  # bucket listings show the newest cells
        cells = conn.execute(select(Evaluation.adapter_version, Evaluation.bucket_id)).all()
    assert after == {v: c for v, c in before.items() if v != 2}
    assert sorted(cells, key=str) == sorted(set(cells), key=str)  # one cell per pair
    assert count(engine, ProbeResult) == 3 * probes


def test_processed_commands_expire_but_the_pause_state_stays(engine: Engine) -> None:
    old = NOW - timedelta(days=10)
    with write_transaction(engine) as conn:
        for command in ("pause", "resume", "pause"):
            control.submit_command(conn, command, "admin")
        control.acknowledge_pending(conn, "applied")
        conn.execute(update(ControlCommand).values(created_at=old))
    with write_transaction(engine) as conn:
        assert prune_commands(conn, NOW - timedelta(days=7), batch=100) == 2
        assert control.is_paused(conn)  # the newest pause is kept: it still says so
    with write_transaction(engine) as conn:
        control.submit_command(conn, "resume", "admin")  # not processed yet: it stays
        conn.execute(update(ControlCommand).values(created_at=old))
    with write_transaction(engine) as conn:
        assert prune_commands(conn, NOW - timedelta(days=7), batch=100) == 1
        assert not control.is_paused(conn)
    assert count(engine, ControlCommand) == 1


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_housekeeper_prunes_when_due_in_small_batches(engine: Engine) -> None:
    seed_versions(engine)
    add_decisions(engine, 30, age=timedelta(days=60))
    clock = FakeClock()
    config = RetentionConfig(batch_rows=7, interval_seconds=60, busy_interval_seconds=600)
    keeper = Housekeeper(lambda: write_transaction(engine), config, clock=clock)
    assert keeper.maybe_run(idle=True) is None  # not yet due
    clock.t = 61
    assert keeper.maybe_run(idle=False) is None  # busy: due after 600 s only
    done = keeper.maybe_run(idle=True)
    assert done == {"teacher_decisions": 29, "evaluations": 10, "control_commands": 0,
                    "probe_results": 8}  # fmt: skip
    assert keeper.state_dict()["deleted"]["teacher_decisions"] == 29
    assert keeper.maybe_run(idle=True) is None  # just ran
    clock.t = 61 + 600
    assert keeper.maybe_run(idle=False) == dict.fromkeys(done, 0)  # busy, but overdue
    assert Housekeeper(lambda: write_transaction(engine), RetentionConfig(enabled=False),
                       clock=clock).due(idle=True) is False  # fmt: skip
