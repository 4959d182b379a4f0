"""Alembic environment: target metadata is the learner.store schema.

The engine comes from ``config.attributes["engine"]`` when called from code (the service
and the tests), else from ``sqlalchemy.url`` or ``LIFELONG_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, Engine

from learner.store.db import make_engine
from learner.store.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = config.get_main_option("sqlalchemy.url") or os.environ["LIFELONG_DATABASE_URL"]
    return make_engine(url)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    """Switch SQLite's foreign key enforcement, outside any transaction (inside one the
    pragma is a no-op): on the raw connection, before SQLAlchemy's "begin" hook runs."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        # Batch mode rebuilds a SQLite table (copy, drop, rename). With foreign keys
        # enforced, dropping the old table acts as a delete with ON DELETE CASCADE: a
        # rebuild of buckets emptied examples and everything that refers to them. Off
        # during the migration (as SQLite's ALTER TABLE documentation prescribes), then
        # checked and on again.
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            if connection.in_transaction():  # autobegun by configure(): end it first,
                connection.commit()  # or the pragma below would be a no-op inside it
        finally:
            if sqlite:
                if connection.in_transaction():
                    connection.rollback()  # a failed migration: nothing of it is kept
                _sqlite_foreign_keys(connection, on=True)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
