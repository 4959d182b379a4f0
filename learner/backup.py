"""Backup and restore of a service's state: its data directory and its database.

A consistent copy while the service runs, in an order that keeps the two halves paired:

1. the learner's newest complete checkpoint (``LATEST``'s; each is written atomically),
2. the database, with SQLite's online backup API (a snapshot of one instant, taken while
   the server and the learner go on writing): it is at least as new as the checkpoints,
   as after a crash, which the learner recovers from (versions newer than its checkpoint
   are known to the registry and followed),
3. everything else in the data directory (adapters, the base model copy, suites, the admin
   key): an adapter's files are complete before its registry row is, so every version the
   snapshot knows has its files (unless it was retired and pruned meanwhile: then it is
   unservable, as it would have been anyway). Temporaries of atomic writes are skipped.

A PostgreSQL database is not copied: the copy holds the files, and ``BACKUP.txt`` says how
to pair them with ``pg_dump`` (pause the learner, dump, back up, resume).

``restore`` copies a backup into an empty data directory (and the database file to where
the target's settings put it). A restored service serves the same active version and its
learner resumes from the same checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from learner.fsutil import write_json_atomically
from learner.store.snapshot import database_name, sqlite_path, sqlite_snapshot
from learner.training.checkpoint import CheckpointDir

DATABASE_FILE = "lifelong.db"  # the SQLite database in a backup
NOTE_FILE = "BACKUP.txt"
CHECKPOINTS = Path("learner") / "checkpoints"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class BackupResult:
    """Where the backup went and what it holds."""

    dest: Path
    database: str  # "sqlite" (copied) or "postgresql" (pair it with pg_dump)
    files: int


def _skipped(name: str) -> bool:
    """Temporaries of atomic writes (``.name.tmp-pid``, ``.name.old-pid``) and locks."""
    return name.startswith(".") or ".tmp" in name or name.endswith(".lock")


def _copy_tree(src: Path, dest: Path, exclude: set[Path]) -> int:
    """Copy ``src`` into ``dest`` (file modes kept), leaving out ``exclude`` (absolute
    paths) and temporaries; returns the number of files copied."""
    copied = 0
    if not src.is_dir():
        return 0
    for path in sorted(src.iterdir()):
        if path.resolve() in exclude or _skipped(path.name):
            continue
        target = dest / path.name
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            copied += _copy_tree(path, target, exclude)
        elif path.is_file():
            try:
                shutil.copy2(path, target)
            except FileNotFoundError:  # removed meanwhile (a pruned candidate)
                continue
            copied += 1
    return copied


def _copy_checkpoint(src: Path, dest: Path, attempts: int = 3) -> int:
    """The newest complete checkpoint (``LATEST``'s) and a ``LATEST`` naming it. The
    learner may save another meanwhile and prune old ones; the one ``LATEST`` named
    outlives one more save, and a copy that lost it to a second is taken again."""
    checkpoints = CheckpointDir(src)
    for _ in range(attempts):
        latest = checkpoints.latest()
        if latest is None:
            return 0
        shutil.rmtree(dest / latest.name, ignore_errors=True)
        (dest / latest.name).mkdir(parents=True)
        try:
            expected = sum(1 for p in latest.rglob("*") if p.is_file())
        except FileNotFoundError:  # pruned while listed
            continue
        files = _copy_tree(latest, dest / latest.name, set())
        if files == expected and (dest / latest.name / "state.json").is_file():
            step = json.loads((latest / "state.json").read_text())["step"]
            write_json_atomically(dest / "LATEST", {"step": step, "dir": latest.name})
            return files + 1
        shutil.rmtree(dest / latest.name, ignore_errors=True)
    raise RuntimeError("the learner's checkpoints kept changing during the backup; try again")


def backup(data_dir: Path, database_url: str, dest: Path) -> BackupResult:
    """Copy the service's state into ``dest`` (which must not exist or be empty)."""
    data_dir, dest = data_dir.resolve(), dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    if dest == data_dir or data_dir in dest.parents:
        raise ValueError("the backup cannot go inside the data directory")
    dest.mkdir(parents=True, exist_ok=True)
    database = sqlite_path(database_url)
    files = _copy_checkpoint(data_dir / CHECKPOINTS, dest / CHECKPOINTS)
    if database is not None:
        sqlite_snapshot(database, dest / DATABASE_FILE)
        files += 1
    else:
        (dest / NOTE_FILE).write_text(_postgres_note(database_url))
    # In a backup, lifelong.db is the snapshot: a leftover file of that name in the data
    # directory of a PostgreSQL service is not copied (restore would take it for one).
    exclude = {data_dir / CHECKPOINTS}
    for db_file in {data_dir / DATABASE_FILE, *([database] if database else [])}:
        exclude |= {db_file, *(Path(f"{db_file}{s}") for s in _SQLITE_SIDE_FILES)}
    files += _copy_tree(data_dir, dest, exclude)
    return BackupResult(dest, "sqlite" if database is not None else "postgresql", files)


def _postgres_note(database_url: str) -> str:
    name = database_name(database_url)
    return (
        "This backup holds the data directory's files, not the PostgreSQL database.\n"
        "For a matching pair: pause the learner (POST /v1/learner/pause), then\n"
        f"  pg_dump --format=custom --file=database.dump <url of {name}>\n"
        "and this backup, then resume the learner (POST /v1/learner/resume).\n"
        "To restore: pg_restore --clean --dbname=<url> database.dump, then\n"
        "  lifelong restore <this folder> --data-dir <empty dir> --database-url <url>\n"
    )


def restore(src: Path, data_dir: Path, database_url: str) -> int:
    """Copy the backup ``src`` into the empty ``data_dir``; a SQLite backup's database goes
    to the file ``database_url`` names. Returns the number of files copied."""
    src, data_dir = src.resolve(), data_dir.resolve()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} is not empty: restore only into an empty data directory")
    backed_up = src / DATABASE_FILE
    database = sqlite_path(database_url)
    if backed_up.is_file() and database is None:
        raise ValueError("the backup holds a SQLite database; restore it with a SQLite URL")
    if not backed_up.is_file() and database is not None:
        raise ValueError(f"the backup holds no database ({NOTE_FILE} says how to pair it)")
    if database is not None and database.exists():
        raise ValueError(f"{database} exists: restore only into a new database")
    data_dir.mkdir(parents=True, exist_ok=True)
    files = _copy_tree(src, data_dir, {backed_up, src / NOTE_FILE})
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(backed_up, database)
        files += 1
    return files
