"""Alembic revisions: upgrade, downgrade, upgrade again, and no autogenerate difference."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from learner.store.db import downgrade, is_at_head, make_engine, upgrade, write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Base, Example, ReplayState


def _tables(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _diff(engine) -> list[object]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    assert _tables(engine) == set()
    upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    assert is_at_head(engine)
    downgrade(engine, "base")
    assert _tables(engine) == set()
    assert not is_at_head(engine)
    upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    engine.dispose()


def test_autogenerate_finds_no_difference(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    upgrade(engine)
    assert _diff(engine) == []
    engine.dispose()


def test_autogenerate_notices_a_missing_table(empty_db_url: str) -> None:
    """The comparison is live: a database behind the models shows a difference."""
    engine = make_engine(empty_db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE teacher_decisions")
    assert any(d[0] == "add_table" for d in _diff(engine) if isinstance(d, tuple))
    engine.dispose()


# Columns that revision 0004 makes 64-bit (the sequence-filled ids and the references to
# examples.id); buckets.id stays 32-bit and shows the check can tell the two apart.
WIDE_COLUMNS = {("examples", "id"), ("probe_results", "example_id"), ("teacher_decisions", "id")}


def _column_types(engine) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    """Declared type of every column (PostgreSQL: also each sequence, as (name, "seq"))."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        types = {
            (table, col["name"]): str(col["type"])
            for table in inspector.get_table_names()
            for col in inspector.get_columns(table)
        }
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql("SELECT sequencename, data_type FROM pg_sequences")
            types.update({(name, "seq"): data_type for name, data_type in rows})
    return types


def test_bigint_ids_revision_round_trip(empty_db_url: str) -> None:
    """0004 widens the ids on PostgreSQL (sequences included), leaves SQLite's DDL as it
    was (INTEGER PRIMARY KEY must stay the rowid), and its downgrade restores 0003."""
    engine = make_engine(empty_db_url)
    upgrade(engine, "0003")
    before = _column_types(engine)
    upgrade(engine, "0004")
    after = _column_types(engine)
    if engine.dialect.name == "sqlite":
        assert after == before
    else:
        assert {after[c] for c in WIDE_COLUMNS} == {"BIGINT"}
        assert {before[c] for c in WIDE_COLUMNS} == {"INTEGER"}
        assert after[("buckets", "id")] == "INTEGER"
        assert after[("examples_id_seq", "seq")] == "bigint"
        assert after[("buckets_id_seq", "seq")] == "integer"
    downgrade(engine, "0003")
    assert _column_types(engine) == before
    engine.dispose()


def test_chat_buckets_revision_round_trip(empty_db_url: str) -> None:
    """0005 adds buckets.format (existing buckets become completion buckets) and
    examples.messages; its downgrade restores 0004 with the data kept."""
    engine = make_engine(empty_db_url)
    upgrade(engine, "0004")
    before = _column_types(engine)
    with write_transaction(engine) as conn:
        conn.execute(text("INSERT INTO buckets (name, kind, grader, status) "
                          "VALUES ('old', 'task', 'exact', 'active')"))  # fmt: skip
        conn.execute(text("INSERT INTO examples (bucket_id, prompt, target, split, content_hash)"
                          " VALUES (1, 'p', 't', 'train', 'h')"))  # fmt: skip
        conn.execute(insert(ReplayState).values(example_id=1, priority=1.0, times_sampled=0))

    def rows() -> tuple[int, int, int]:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("buckets", "examples", "replay_state")
            )

    # SQLite rebuilds buckets for the new check: with foreign keys on, the rebuild's drop
    # cascaded and emptied examples and replay_state (found in review).
    upgrade(engine, "0005")
    assert rows() == (1, 1, 1)
    after = _column_types(engine)
    assert set(after) - set(before) == {("buckets", "format"), ("examples", "messages")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT format FROM buckets")).scalar_one() == "completion"
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        conn.execute(text("UPDATE buckets SET format = 'audio'"))
    downgrade(engine, "0004")
    assert _column_types(engine) == before
    assert rows() == (1, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM buckets")).scalar_one() == "old"
        if engine.dialect.name == "sqlite":  # enforced again after the migrations
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_example_ids_past_32_bits(engine) -> None:  # type: ignore[no-untyped-def]
    """Ingestion goes on past 2**31 ids, and the rows that refer to examples keep up."""
    big = 2**31 + 10
    with write_transaction(engine) as conn:
        ingest_batch(conn, "wide", [NewExample("first", "1")])
        conn.execute(update(Example).values(id=big - 1))
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('examples_id_seq', :v)"), {"v": big - 1})
        ingest_batch(conn, "wide", [NewExample("second", "2")])
        ids = list(conn.execute(select(Example.id).order_by(Example.id)).scalars())
        assert ids == [big - 1, big]
        conn.execute(insert(ReplayState).values(example_id=big, priority=1.0, times_sampled=0))
        stored = conn.execute(select(ReplayState.example_id)).scalar_one()
    assert stored == big


def test_rest_periods_revision_round_trip(empty_db_url: str) -> None:
    """0006 adds teacher_decisions.renewed_at (rests renewed, not repeated); its downgrade
    restores 0005 with the decisions kept."""
    engine = make_engine(empty_db_url)
    upgrade(engine, "0005")
    before = _column_types(engine)
    with write_transaction(engine) as conn:
        conn.execute(text("INSERT INTO teacher_decisions (step, scores, reason, steps) "
                          "VALUES (3, '{}', 'rest: no arm is learnable now', 0)"))  # fmt: skip
    upgrade(engine)
    after = _column_types(engine)
    assert set(after) - set(before) == {("teacher_decisions", "renewed_at")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT renewed_at FROM teacher_decisions")).one() == (None,)
    downgrade(engine, "0005")
    assert _column_types(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM teacher_decisions")).scalar_one() == 1
    engine.dispose()
