"""Logs: readable text by default, JSON lines with ``--log-json`` (also for the learner the
server starts), and every registry event logged once with its reason."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from server.observability.logs import configure_logging
from server.process.supervisor import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(True, "INFO", component="learner", stream=stream)
    log = logging.getLogger("learner.test")
    log.debug("not shown")
    log.info("step %d done", 7, extra={"step": 7, "path": Path("/x")})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "step 7 done" and first["level"] == "INFO"
    assert first["logger"] == "learner.test" and first["component"] == "learner"
    assert first["step"] == 7 and first["path"] == "/x"  # extras; str() where JSON cannot
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_text_by_default(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(False, "WARNING", stream=stream)
    logging.getLogger("server.x").info("quiet")
    logging.getLogger("server.x").warning("loud %s", "enough")
    [line] = stream.getvalue().splitlines()
    assert line.endswith("lifelong server WARNING server.x: loud enough")


def test_the_learner_inherits_the_choice() -> None:
    assert child_env("sqlite://", log_json=True, log_level="DEBUG")["LIFELONG_LOG_JSON"] == "1"
    env = child_env("sqlite://")
    assert env["LIFELONG_LOG_JSON"] == "0" and env["LIFELONG_DATABASE_URL"] == "sqlite://"


def registry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "learner.model.registry"]


def test_registry_events_are_logged_once_with_their_reason(
    client: TestClient, api: Any, adapters: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="learner.model.registry")
    first = adapters.add()
    second = adapters.add(parent=first)
    assert [getattr(r, "event", None) for r in registry_records(caplog)] == ["candidate"] * 2
    caplog.clear()
    admin = api.auth("admin")
    for path, body in (
        (f"/v1/adapters/{first}/promote", {"reason": "first light"}),
        (f"/v1/adapters/{second}/promote", {}),
        ("/v1/adapters/rollback", {"reason": "too chatty"}),
    ):
        assert client.post(path, json=body, headers=admin).status_code == 200
    records = registry_records(caplog)
    assert [(r.event, r.from_version, r.to_version) for r in records] == [  # type: ignore[attr-defined]
        ("promote", None, first),
        ("promote", first, second),
        ("rollback", second, first),
    ]
    assert [r.reason for r in records] == ["first light", "promoted by env-1", "too chatty"]  # type: ignore[attr-defined]
    assert (
        records[2].getMessage() == f"registry: rollback v{second} -> v{first} by env-1: too chatty"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_log_json(db_url: str, data_dir: Path, adapters: Any, tmp_path: Path) -> None:
    """``lifelong serve --log-json``: everything on stderr is a JSON line, the registry
    events among them."""
    port = _free_port()
    env = {
        **os.environ,
        "LIFELONG_DATABASE_URL": db_url,
        "LIFELONG_API_KEYS": "admin:log-test-admin",
        "LIFELONG_BASE_MODEL": "builtin:micro",
        "LIFELONG_PRELOAD_MODEL": "false",
        "LIFELONG_ALIGNMENT_SUITE": "false",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "server.cli", "serve", "--no-learner", "--log-json"]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        version = adapters.add()
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        headers = {"Authorization": "Bearer log-test-admin"}
        body = {"reason": "from the log test"}
        response = httpx.post(f"{url}/v1/adapters/{version}/promote", json=body, headers=headers)
        assert response.status_code == 200, response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    [promote] = [e for e in entries if e.get("event") == "promote"]
    assert promote["reason"] == "from the log test" and promote["to_version"] == version
    assert promote["level"] == "INFO" and promote["component"] == "server"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")
