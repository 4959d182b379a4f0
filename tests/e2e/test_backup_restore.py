"""Backup while the learner trains, then restore into an empty data directory: the restored
service serves the same active version with the same greedy answers, and its learner
resumes from the checkpoint the backup holds (SQLite: the database is copied with the
online backup API while both processes write)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import (
    MICRO_LEARNER_ENV,
    PROMOTE_EVERY_CANDIDATE,
    REPO_ROOT,
    checkpoint_step,
    completions,
    latest_checkpoint_step,
    promoted,
    submit,
)

from learner.builtin.families import make_examples

ENV = {
    **MICRO_LEARNER_ENV,
    **PROMOTE_EVERY_CANDIDATE,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "20",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "10",
}


def lifelong(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def model_loaded(http: Any) -> bool:
    """Completions answer (a server is ready before its model is loaded: 503 until then)."""
    body = {"model": "base", "prompt": "copy ab =", "max_tokens": 1}
    return bool(http.post("/v1/completions", json=body).status_code == 200)


def backed_up_active(backup: Path) -> int | None:
    """The active version in the backup's database (the newest promote or rollback)."""
    db = sqlite3.connect(backup / "lifelong.db")
    try:
        row = db.execute(
            "SELECT to_version FROM registry_events WHERE action IN "
            "('promote', 'force', 'rollback') ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def test_backup_while_training_then_restore(start_server: Any, tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    server = start_server(f"sqlite:///{data / 'lifelong.db'}", learner=True, env=ENV,
                          data_dir=data)  # fmt: skip
    prompts = [e["prompt"] for e in make_examples("copy", 16, level=1, seed=4)]
    with server.client("admin", timeout=120) as http:
        submit(http, "copy-l1", make_examples("copy", 200, level=1, seed=1))
        server.wait_for(lambda: promoted(http, min_version=2), 180, "two promotions")
        server.wait_for(lambda: checkpoint_step(data) >= 20, 60, "a checkpoint")
        out = lifelong("backup", str(backup), "--data-dir", str(data))  # the learner trains on
        assert "backed up" in out
        version = backed_up_active(backup)
        assert version is not None
        answers = completions(http, f"lifelong@{version}", prompts, max_tokens=8)
    step = latest_checkpoint_step(backup)
    assert step is not None and step >= 20
    server.stop()

    out = lifelong("restore", str(backup), "--data-dir", str(restored))
    assert (restored / "lifelong.db").is_file() and (restored / "adapters").is_dir()
    again = start_server(f"sqlite:///{restored / 'lifelong.db'}", learner=True, env=ENV,
                         data_dir=restored)  # fmt: skip
    with again.client("admin", timeout=120) as http:
        again.wait_for(lambda: model_loaded(http), 60, "the base model")
        active = http.get("/v1/adapters/active").json()
        # The restored learner may have promoted another version by now: the backup's
        # active version is this one or its ancestor, and answers as it did.
        assert active["version"] is not None and active["version"] >= version
        assert completions(http, f"lifelong@{version}", prompts, max_tokens=8) == answers
        again.wait_for(lambda: "resumed from checkpoint" in again.stderr(), 60, "the resume")
    line = next(x for x in again.stderr().splitlines() if "resumed from checkpoint" in x)
    assert line.rstrip().endswith(f"at step {step}"), line
    # The backup is no place to restore into twice, and restore refuses a used data dir.
    failed = subprocess.run(
        [sys.executable, "-m", "server.cli", "restore", str(backup), "--data-dir", str(data)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failed.returncode == 1 and "not empty" in failed.stderr
    assert json.loads((backup / "learner" / "checkpoints" / "LATEST").read_text())["step"] == step
