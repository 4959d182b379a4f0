"""The database side of a backup: which SQLite file a URL names, and a consistent copy of
it while other connections write (SQLite's online backup API)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (None: another database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def database_name(database_url: str) -> str | None:
    """The database a URL names (no password)."""
    return make_url(database_url).database


def sqlite_snapshot(database: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy while other connections write (pages
    written during the copy restart it, so it always ends with one instant's state)."""
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
