"""``lifelong backup DEST`` and ``lifelong restore SRC``: a consistent copy of a running
service's data directory and database, and a new service made from it
(:mod:`learner.backup`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from server.cli.groups import with_groups
from server.cli.options import Database


@with_groups
def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    database: Database,
) -> None:
    """Copy the data directory and the database while the service runs.

    SQLite: a consistent copy of both. PostgreSQL: the files, and `BACKUP.txt` in the
    backup says how to pair them with `pg_dump`."""
    from learner.backup import NOTE_FILE, backup as make_backup

    settings = database.settings()
    try:
        result = make_backup(settings.data_dir, settings.resolved_database_url(), dest)
    except ValueError as exc:
        print(f"lifelong backup: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    print(f"backed up {result.files} files to {result.dest}")
    if result.database != "sqlite":
        print(f"the PostgreSQL database is not in it: see {result.dest / NOTE_FILE}")


@with_groups
def restore(
    src: Annotated[Path, typer.Argument(help="A folder made by `lifelong backup`.")],
    database: Database,
) -> None:
    """Make a new service's data directory (and SQLite database) from a backup: it serves
    the same active version, and its learner resumes from the same checkpoint."""
    from learner.backup import restore as restore_backup

    settings = database.settings()
    try:
        files = restore_backup(src, settings.data_dir, settings.resolved_database_url())
    except ValueError as exc:
        print(f"lifelong restore: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    print(f"restored {files} files into {settings.data_dir.resolve()}")
