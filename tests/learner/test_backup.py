"""learner.backup on files: what a backup holds (the newest checkpoint, a snapshot of the
SQLite database, the rest of the data directory, no temporaries), restore into an empty
directory only, and PostgreSQL's note instead of a database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from learner.backup import backup, restore


def data_dir(root: Path) -> Path:
    data = root / "data"
    checkpoints = data / "learner" / "checkpoints"
    for step in (10, 20):
        folder = checkpoints / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"w" * step)
        (folder / "state.json").write_text(json.dumps({"step": step}))
    (checkpoints / "LATEST").write_text(json.dumps({"step": 20, "dir": "step-00000020"}))
    (checkpoints / ".step-00000030.tmp-99").mkdir()  # a save in progress
    (data / "adapters" / "v1").mkdir(parents=True)
    (data / "adapters" / "v1" / "adapter_model.safetensors").write_bytes(b"v1")
    (data / "adapters" / ".v2.tmp-7").mkdir()
    (data / "admin.key").write_text("ll_secret\n")
    (data / "admin.key").chmod(0o600)
    db = sqlite3.connect(data / "lifelong.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()
    db.close()
    return data


def test_backup_and_restore_of_a_sqlite_service(tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    url = f"sqlite:///{data / 'lifelong.db'}"
    result = backup(data, url, tmp_path / "backup")
    held = {p.relative_to(result.dest).as_posix() for p in result.dest.rglob("*") if p.is_file()}
    assert held == {
        "lifelong.db",
        "admin.key",
        "adapters/v1/adapter_model.safetensors",
        "learner/checkpoints/LATEST",
        "learner/checkpoints/step-00000020/adapter_model.safetensors",
        "learner/checkpoints/step-00000020/state.json",
    }
    assert result.database == "sqlite" and result.files == len(held)
    assert (result.dest / "admin.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="not empty"):
        backup(data, url, result.dest)

    target = tmp_path / "restored"
    restore(result.dest, target, f"sqlite:///{target / 'lifelong.db'}")
    db = sqlite3.connect(target / "lifelong.db")
    assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
    db.close()
    latest = json.loads((target / "learner" / "checkpoints" / "LATEST").read_text())
    assert latest == {"step": 20, "dir": "step-00000020"}
    with pytest.raises(ValueError, match="not empty"):
        restore(result.dest, target, f"sqlite:///{tmp_path / 'other.db'}")


def test_a_postgres_backup_holds_the_files_and_says_how_to_pair_them(tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    result = backup(data, "postgresql+psycopg://u@localhost/prod", tmp_path / "backup")
    assert result.database == "postgresql"
    assert not (result.dest / "lifelong.db").exists()  # a leftover file, not the database
    assert "pg_dump" in (result.dest / "BACKUP.txt").read_text()
    with pytest.raises(ValueError, match="holds no database"):
        restore(result.dest, tmp_path / "r1", f"sqlite:///{tmp_path / 'r1' / 'lifelong.db'}")
    restore(result.dest, tmp_path / "r2", "postgresql+psycopg://u@localhost/new")
    assert (tmp_path / "r2" / "adapters" / "v1" / "adapter_model.safetensors").is_file()
