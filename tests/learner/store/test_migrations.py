"""Alembic revisions: upgrade, downgrade, upgrade again, and no autogenerate difference."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from learner.store.db import downgrade, is_at_head, make_engine, upgrade
from learner.store.models import Base


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
