"""Ingestion under faults, on a real server: a server SIGKILLed while it stores a batch of
5,000 examples keeps all of the batch or none of it, and a resubmission stores exactly
what is missing (SQLite and PostgreSQL); a SQLite database locked by another process
for longer than the busy timeout is a clear 503 with Retry-After, stores nothing, and
ingestion goes on once the lock is gone."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, ServerStarter, _kill_group
from helpers import submit

from learner.builtin.families import make_examples
from learner.store.db import SQLITE_BUSY_TIMEOUT_MS

BUCKET = "copy-l2"
BATCH = 5000


def bucket_count(http: httpx.Client) -> int:
    response = http.get(f"/v1/buckets/{BUCKET}")
    if response.status_code == 404:
        return 0
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return int(body["train_examples"]) + int(body["probe_examples"])


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigkill_while_storing_a_batch_keeps_all_or_nothing(
    start_server: ServerStarter, db_url: str, tmp_path: Path, delay: float
) -> None:
    examples = make_examples("copy", BATCH, level=2, seed=11)
    data_dir = tmp_path / "data"
    env = {"LIFELONG_ALIGNMENT_SUITE": "false"}
    server = start_server(db_url, env=env, data_dir=data_dir)

    def post() -> None:  # the answer never comes: the server dies first (or just after)
        with server.client("submit", timeout=30) as http, contextlib.suppress(httpx.HTTPError):
            http.post("/v1/tasks", json={"bucket": BUCKET, "examples": examples})

    sender = threading.Thread(target=post, daemon=True)
    sender.start()
    time.sleep(delay)  # mid-request: parsing, validating or storing the batch
    _kill_group(server.proc.pid)
    server.proc.wait(10)
    sender.join(30)

    again = start_server(db_url, env=env, data_dir=data_dir)
    with again.client("submit") as http:
        stored = bucket_count(http)
        assert stored in (0, BATCH), stored  # one transaction: all of it or none
        body = submit(http, BUCKET, examples)
        assert body["accepted"] == BATCH - stored and body["duplicates"] == stored
        assert bucket_count(http) == BATCH


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_sqlite_file_locked_past_the_busy_timeout_is_a_503(
    live_server: LiveServer, db_url: str
) -> None:
    path = db_url.removeprefix("sqlite:///")
    examples = make_examples("copy", 50, level=2, seed=3)
    timeout_s = SQLITE_BUSY_TIMEOUT_MS / 1000
    with live_server.client("submit", timeout=timeout_s + 60) as http:
        locker = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # another process's long write transaction
            started = time.monotonic()
            response = http.post("/v1/tasks", json={"bucket": BUCKET, "examples": examples})
            waited = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert "database" in response.json()["error"]["message"]
            assert int(response.headers["Retry-After"]) > 0
            assert timeout_s - 1 <= waited <= timeout_s + 15, waited  # bounded, no hang
            assert http.get("/healthz").status_code == 200
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert bucket_count(http) == 0  # the refused batch stored nothing
        body = submit(http, BUCKET, examples)
        assert body["accepted"] == 50 and bucket_count(http) == 50
