"""``/healthz`` and ``/readyz`` on SQLite and PostgreSQL: cheap, cached, and discreet."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from learner.store import db
from learner.store.db import downgrade
from server.api.routes import health

if TYPE_CHECKING:
    from tests.server.conftest import Api


def app_engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.lifelong.engine  # type: ignore[attr-defined]
    return engine


@contextmanager
def counted_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def what_it_asks(statement: str) -> str:
    """``statement`` on one line, with the dialects' check for alembic's table named alike."""
    flat = " ".join(statement.split())
    exists = (
        'PRAGMA main.table_info("alembic_version")',  # SQLite
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class ",  # PostgreSQL
    )
    return "does alembic_version exist?" if flat.startswith(exists) else flat


def test_health_is_always_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_is_answered_from_the_last_check(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "RECHECK_SECONDS", 60.0)
    assert client.get("/readyz").json() == {"status": "ready"}
    with counted_statements(app_engine(client)) as statements:
        for _ in range(20):
            response = client.get("/readyz")
            assert response.status_code == 200 and response.json() == {"status": "ready"}
    assert statements == []


def test_migration_scripts_are_read_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check asks the database again here, but never re-parses the scripts."""
    monkeypatch.setattr(health, "RECHECK_SECONDS", 0.0)
    assert client.get("/readyz").status_code == 200

    def parse_again(*_: object, **__: object) -> None:
        raise AssertionError("the migration scripts were parsed again")

    monkeypatch.setattr(db.ScriptDirectory, "from_config", parse_again)
    with counted_statements(app_engine(client)) as statements:
        for _ in range(3):
            response = client.get("/readyz")
            assert response.status_code == 200 and response.json() == {"status": "ready"}
    # The database itself was asked each time, for alembic's revision and nothing else: per
    # request, whether the version table exists (the dialect's own query), then its row.
    assert [what_it_asks(s) for s in statements if s != "BEGIN"] == [
        "does alembic_version exist?",
        "SELECT alembic_version.version_num FROM alembic_version",
    ] * 3


def test_a_schema_behind_is_noticed_within_the_recheck_interval(
    client: TestClient, api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(health, "RECHECK_SECONDS", 60.0)
    assert client.get("/readyz").status_code == 200
    downgrade(api.engine, "0003")
    assert client.get("/readyz").status_code == 200  # still the remembered answer

    class AMinuteLater:
        @staticmethod
        def monotonic() -> float:
            return time.monotonic() + 61.0

    monkeypatch.setattr(health, "time", AMinuteLater)
    with caplog.at_level(logging.WARNING, logger=health.__name__):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": health.SCHEMA_BEHIND}
    assert "revision ['0003']" in caplog.text  # the details are in the log
    assert client.get("/healthz").status_code == 200


def break_database(url: str) -> None:
    """Make the database fail every query: PostgreSQL drops it, SQLite's file is garbage."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # From another database of the same server (the fixture's later drop is IF EXISTS).
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
        admin.dispose()
        return
    path = Path(parsed.database or "")
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    path.write_bytes(b"this is not a database " * 256)


def test_a_database_error_is_logged_not_shown(
    client: TestClient,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(health, "RECHECK_SECONDS", 0.0)
    assert client.get("/readyz").status_code == 200
    engine = app_engine(client)
    engine.dispose()  # no pooled connection to the old file or database survives
    break_database(db_url)
    with caplog.at_level(logging.WARNING, logger=health.__name__):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": health.DATABASE_UNAVAILABLE}
    assert "did not answer" in caplog.text
    if engine.dialect.name == "postgresql":
        assert str(make_url(db_url).database) in caplog.text  # named in the log only
    else:
        assert "not a database" in caplog.text
    assert client.get("/healthz").status_code == 200
