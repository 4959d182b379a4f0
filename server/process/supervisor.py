"""Process supervision for ``lifelong serve``: the learner runs as a child process and is
restarted whenever it exits while the service is up; the demo feeder submits the synthetic
demo stream as a client would."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine

from learner.builtin.families import demo_stream
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch

log = logging.getLogger(__name__)


class LearnerSupervisor:
    """Keeps one learner process alive; restarts it with a growing back-off if it dies."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="learner-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        # The kernel's parent-death signal follows the spawning thread: the first learner
        # is spawned by the caller, respawns by the watcher, which lives until stop().
        self.proc = subprocess.Popen(self.argv, env=self.env, preexec_fn=_die_with_parent)
        log.info("learner started (pid %d)", self.proc.pid)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            assert self.proc is not None
            started = time.monotonic()
            code = self.proc.wait()
            if self._stop.is_set():
                return
            # A learner that ran for a while gets restarted at once; one that keeps dying
            # right after start is restarted ever more slowly (at most every 30 s).
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
            print(
                f"lifelong: learner exited with code {code}; restarting in {backoff:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            if self._stop.wait(backoff):
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self.restarts += 1
                self._spawn()

    def begin_stop(self) -> None:
        """Stop respawning and ask the learner to finish its step and checkpoint; returns at
        once (called from the server's signal handler, so that the learner winds down while
        HTTP requests drain, and a learner that exits meanwhile is not restarted)."""
        with self._lock:  # no respawn can slip in between
            self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the learner: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.begin_stop()
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("learner (pid %d) did not stop in %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


def _die_with_parent() -> None:
    """In the child before exec: have the kernel send SIGTERM when the server dies, even by
    SIGKILL, so that no learner is left running without its supervisor (Linux only)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def learner_argv(data_dir: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", "learner", "--data-dir", data_dir]


class DemoFeeder:
    """Submits one batch of the synthetic demo stream every ``interval`` seconds."""

    def __init__(self, engine: Engine, interval: float = 10.0, seed: int = 0) -> None:
        self.engine = engine
        self.interval = interval
        self.stream = demo_stream(seed=seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = next(self.stream)
            examples = [NewExample(e["prompt"], e["target"]) for e in batch.examples]
            with write_transaction(self.engine) as conn:
                ingest_batch(
                    conn,
                    batch.bucket,
                    examples,
                    kind=batch.family.kind,
                    grader=batch.family.grader,
                    client="demo",
                )
            self._stop.wait(self.interval)


def child_env(
    database_url: str, log_json: bool = False, log_level: str | None = None
) -> dict[str, str]:
    """The learner's environment; the database URL (maybe with a password) goes here rather
    than on the command line, where any local user could read it. The learner logs as the
    server does (text or JSON lines, and from the same level): they share one stderr."""
    env = dict(os.environ)
    env["LIFELONG_DATABASE_URL"] = database_url
    env["LIFELONG_LOG_JSON"] = "1" if log_json else "0"
    if log_level is not None:
        env["LIFELONG_LOG_LEVEL"] = log_level
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
