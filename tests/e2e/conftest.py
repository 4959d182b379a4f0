"""Whole-service fixtures: a real ``lifelong serve`` in a subprocess, on a loopback port.

``live_server`` starts ``python -m server.cli serve --no-learner`` on the test database
(``db_url``: SQLite and PostgreSQL) and waits for ``/readyz``. For other command lines or
environments use ``start_server``::

    def test_learning(start_server, db_url):
        server = start_server(db_url, learner=True, args=["--demo"], env={"X": "1"})
        with server.client("submit") as http:
            http.post("/v1/tasks", json=...)

Every server started in a test is stopped at its end (SIGTERM, then SIGKILL to its
process group), and when the test fails, the server's stdout and stderr are added to the
failure report. The servers use a tiny base model built once per session (``base_model``)
so that no server spends minutes bootstrapping the default one; pass
``env={"LIFELONG_BASE_MODEL": ...}`` to choose another.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from helpers import REPO_ROOT

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 20_000


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text if len(text) <= chars else "...\n" + text[-chars:]


@dataclass
class LiveServer:
    """A running ``lifelong serve`` process."""

    url: str
    admin_key: str
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]
    data_dir: Path
    database_url: str
    argv: list[str]
    stdout_path: Path
    stderr_path: Path
    stopped_rc: int | None = field(default=None, init=False)

    def client(self, scope: str = "admin", timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for this server holding the key of ``scope``."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.keys[scope]}"},
            timeout=timeout,
        )

    def stdout(self) -> str:
        return _tail(self.stdout_path)

    def stderr(self) -> str:
        return _tail(self.stderr_path)

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.argv)}\nreturn code: {self.proc.poll()}\n"
            f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"
        )

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy, which is returned."""
        return poll_until(predicate, timeout, what, interval)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL the whole process group if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait(timeout)
        # Children it left behind (a learner worker, say) go with the group.
        _kill_group(self.proc.pid)
        self.stopped_rc = self.proc.returncode
        return self.proc.returncode


def poll_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 1.0,
    logs: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, which is returned; on timeout
    the error says what was awaited (and ``logs()``, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{logs()}" if logs is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def launch_server(
    data_dir: Path,
    database_url: str,
    *,
    learner: bool = False,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    keys: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    log_dir: Path | None = None,
) -> LiveServer:
    """Start ``python -m server.cli serve`` and wait until ``/readyz`` answers 200.

    ``keys`` (scope -> key) go into ``LIFELONG_API_KEYS``; by default one random key per
    scope. Pass ``keys={}`` to start without any (the server then writes ``admin.key``,
    which becomes ``admin_key``). ``env`` is laid over the inherited environment last.
    Raises RuntimeError, with the server's output, when it exits or is not ready in time.
    """
    if keys is None:
        keys = {
            scope: f"e2e-{scope}-{secrets.token_hex(8)}" for scope in ("admin", "submit", "read")
        }
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(3):  # the free port may be taken before the server binds it
        port = free_port()
        argv = [sys.executable, "-m", "server.cli", "serve"]
        if not learner:
            argv.append("--no-learner")
        argv += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
        argv += list(args)
        child_env = {
            **os.environ,
            "LIFELONG_DATABASE_URL": database_url,
            "LIFELONG_API_KEYS": ",".join(f"{s}:{k}" for s, k in keys.items()),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        stdout_path = (log_dir or data_dir) / f"server-{port}.stdout"
        stderr_path = (log_dir or data_dir) / f"server-{port}.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, so stop() can end it all
            )
        server = LiveServer(
            url=f"http://127.0.0.1:{port}",
            admin_key=keys.get("admin", ""),
            keys=dict(keys),
            proc=proc,
            data_dir=data_dir,
            database_url=database_url,
            argv=argv,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
        )
        if _wait_ready(server, ready_timeout):
            if not server.admin_key and (data_dir / "admin.key").exists():
                server.admin_key = (data_dir / "admin.key").read_text().strip()
                server.keys["admin"] = server.admin_key
            return server
        server.stop()
        last_error = server.describe()
        if "address already in use" not in server.stderr().lower():
            break
    raise RuntimeError(f"lifelong server did not become ready\n{last_error}")


def _wait_ready(server: LiveServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            try:
                if http.get("/readyz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    return False


class ServerStarter(Protocol):
    def __call__(
        self,
        database_url: str,
        *,
        learner: bool = False,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        keys: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        log_dir: Path | None = None,
    ) -> LiveServer: ...


_SERVERS = pytest.StashKey[list[LiveServer]]()


@pytest.fixture(scope="session")
def base_model(micro_model_dir: Path) -> str:
    """A ready-made tiny base model (built once per session) as a LIFELONG_BASE_MODEL."""
    return str(micro_model_dir)


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, tmp_path: Path, base_model: str
) -> Iterator[ServerStarter]:
    """Start servers for this test (see the module docstring); all stopped at its end."""
    started = request.node.stash.setdefault(_SERVERS, [])

    def start(
        database_url: str,
        *,
        learner: bool = False,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        keys: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        log_dir: Path | None = None,
    ) -> LiveServer:
        server = launch_server(
            data_dir or tmp_path / f"server-data-{len(started)}",
            database_url,
            learner=learner,
            args=args,
            env={"LIFELONG_BASE_MODEL": base_model, **(env or {})},
            keys=keys,
            ready_timeout=ready_timeout,
            log_dir=log_dir,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(start_server: ServerStarter, db_url: str) -> LiveServer:
    """``lifelong serve --no-learner`` on the test database (SQLite and PostgreSQL), without
    the builtin alignment suite, so that the database holds only what the test submits."""
    return start_server(db_url, env={"LIFELONG_ALIGNMENT_SUITE": "false"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the output of the test's servers to the report of a failed test."""
    report = yield
    servers: list[LiveServer] = item.stash.get(_SERVERS, [])
    if report.failed:
        for i, server in enumerate(servers):
            report.sections.append((f"lifelong server {i} ({server.url})", server.describe()))
    return report
