"""Stopping ``lifelong serve`` with SIGTERM leaves no process behind, and the next start
picks up where it stopped: during the builtin bootstrap (which starts over) and during
training (the learner finishes its step, checkpoints, and the restart resumes from it)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOP_ENV, checkpoint_step, submit_sort

pytestmark = pytest.mark.slow
STOP_BUDGET_S = 30.0


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it exited while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def sigterm_and_wait_for_group(server: Any) -> float:
    """SIGTERM the server process alone; seconds until no process of its group is left."""
    pgid = server.proc.pid
    assert len(process_group(pgid)) >= 2, "the server should have a learner child"
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    while process_group(pgid):
        elapsed = time.monotonic() - started
        assert elapsed < STOP_BUDGET_S, (
            f"still running after {elapsed:.0f} s: {process_group(pgid)}"
        )
        time.sleep(0.1)
    server.proc.wait(5)
    return time.monotonic() - started


def learner_step(http: Any) -> int:
    status = http.get("/v1/learner").json().get("status") or {}
    return int(status.get("step") or 0)


def test_sigterm_during_the_bootstrap(start_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'boot.db'}"
    env = {**LOOP_ENV, "LIFELONG_BASE_MODEL": "builtin:micro"}
    server = start_server(url, learner=True, data_dir=data_dir, env=env)
    root = data_dir / "models" / "builtin-micro"
    server.wait_for(lambda: root.is_dir(), 60, "the bootstrap to begin", interval=0.05)
    time.sleep(1.0)
    assert not (root / "COMPLETE.json").exists(), "the bootstrap finished before the signal"
    seconds = sigterm_and_wait_for_group(server)
    print(f"stopped during the bootstrap in {seconds:.1f} s")

    again = start_server(url, learner=True, data_dir=data_dir, env=env)
    with again.client("admin") as http:
        submit_sort(http, n=100)
        again.wait_for(lambda: learner_step(http) > 0, 120, "the learner to train")
    assert (root / "COMPLETE.json").exists()


def test_sigterm_during_training_checkpoints_and_resumes(start_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'train.db'}"
    # No periodic checkpoint: the one found after the stop is the one the stop wrote.
    env = {
        **LOOP_ENV,
        "LIFELONG_LEARNER__CHECKPOINT_EVERY": "100000",
        "LIFELONG_LEARNER__CANDIDATE_EVERY": "100000",
    }
    server = start_server(url, learner=True, data_dir=data_dir, env=env)
    with server.client("admin") as http:
        submit_sort(http, n=200)
        server.wait_for(lambda: learner_step(http) >= 10, 120, "10 training steps")
    seconds = sigterm_and_wait_for_group(server)
    print(f"stopped during training in {seconds:.1f} s")
    saved = checkpoint_step(data_dir)
    assert saved >= 10, "the learner did not checkpoint when stopped"

    again = start_server(url, learner=True, data_dir=data_dir, env=env)
    with again.client("admin") as http:
        again.wait_for(lambda: learner_step(http) > saved, 120, "the resumed learner")
    assert f"resumed from checkpoint at step {saved}" in again.stderr() + again.stdout()
