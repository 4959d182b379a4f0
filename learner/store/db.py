"""Engine creation and the migration entry points.

SQLite runs in WAL mode with a busy timeout so that the server and the learner (separate
processes) can write to the same file; PostgreSQL needs nothing special.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

import migrations

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections opened with this execution option start their transaction with
# BEGIN IMMEDIATE on SQLite: they take the write lock up front (waiting up to the busy
# timeout) instead of failing when a read transaction later tries to write.
WRITE_OPTION = "lifelong_write"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so the "begin" hook below decides.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL, creating a SQLite file's folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction, committed on success and rolled back on error."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        yield conn


def alembic_config(engine_or_url: Engine | str) -> Config:
    """An Alembic config pointing at the packaged ``migrations`` folder."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if isinstance(engine_or_url, Engine):
        cfg.attributes["engine"] = engine_or_url
        url = engine_or_url.url.render_as_string(hide_password=False)
    else:
        url = engine_or_url
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Any fixed 64-bit number, the same in every process of the service.
SETUP_LOCK_KEY = 0x6C69666500000001


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """Serialize schema migrations and first-start setup across processes.

    Two processes starting together on an empty database would otherwise both create
    ``alembic_version`` (SQLite: "database is locked") or both mint an admin key.
    PostgreSQL: a session-level advisory lock; SQLite: an exclusive ``flock`` on a file
    beside the database. Not reentrant: do not nest it.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK_KEY})
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # one process only
        return
    path = Path(database).with_name(Path(database).name + ".setup-lock")
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision`` under :func:`setup_lock` (callers must not hold it)."""
    with setup_lock(engine):
        upgrade_locked(engine, revision)


def upgrade_locked(engine: Engine, revision: str = "head") -> None:
    """Migrate; the caller holds :func:`setup_lock` (for setup steps that follow)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


class SchemaNotAtHead(RuntimeError):
    """The database's schema revision is not the newest one this code knows."""


@cache
def head_revisions() -> frozenset[str]:
    """The newest revision(s) of the packaged migration scripts.

    Parsing the scripts takes milliseconds and they cannot change under a running
    process, so they are read once.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revision(s) the database carries; empty when it has no schema at all."""
    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def is_at_head(engine: Engine) -> bool:
    """True when the database carries the newest revision (used by ``/readyz``)."""
    return current_revisions(engine) == head_revisions()


def require_head(engine: Engine) -> None:
    """Raise :class:`SchemaNotAtHead` unless the database carries the newest revision."""
    current = current_revisions(engine)
    if current != head_revisions():
        have = ", ".join(sorted(current)) or "none (no tables)"
        want = ", ".join(sorted(head_revisions()))
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaNotAtHead(
            f"the database {url} has schema revision {have}, this code needs {want}: "
            "run `lifelong db upgrade --database-url <that URL>` first"
        )
