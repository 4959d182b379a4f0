"""A PostgreSQL restart in the middle of steady ingestion, on a cluster of the test's own
(initdb'ed here, so that stopping it disturbs no other test): during the outage every
request is answered at once, 202 or 503 with Retry-After (never a 500, never a hang) and
``/readyz`` says not ready; within 10 s of the database's return ingestion is accepted
again and the learner trains on, without a restart and still the one lease holder; every
acknowledged example is stored exactly once."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import LiveServer, ServerStarter, free_port
from helpers import submit
from sqlalchemy import create_engine, text

from learner.builtin.families import make_examples

pytestmark = pytest.mark.slow

BUCKET = "outage"
RECOVERY_S = 10.0
REQUEST_LIMIT_S = 15.0  # a request slower than this during the outage counts as a hang


@dataclass
class Cluster:
    """A PostgreSQL cluster run by this test as the ``postgres`` user."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/lifelong"

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        argv = ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.data), "-w",
                "-l", str(self.data / "server.log"), "-o", options, *args]  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture
def private_postgres() -> Iterator[Cluster]:
    if os.geteuid() != 0 or not shutil.which("initdb") or not shutil.which("runuser"):
        pytest.skip("needs root, initdb and runuser to run a PostgreSQL cluster of its own")
    root = Path(tempfile.mkdtemp(prefix="lifelong-pg-"))
    shutil.chown(root, "postgres")
    cluster = Cluster(root / "data", free_port())
    initdb = ["runuser", "-u", "postgres", "--", "initdb", "-D", str(cluster.data), "-A",
              "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]  # fmt: skip
    subprocess.run(initdb, check=True, capture_output=True, timeout=120)
    cluster.pg_ctl("start")
    admin = create_engine(
        cluster.url.replace("/lifelong", "/postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE lifelong"))
    admin.dispose()
    try:
        yield cluster
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(cluster.data),
                        "-m", "immediate", "stop"], capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Ingestion:
    """A client submitting a batch of unique examples every 0.1 s, recording each answer."""

    server: LiveServer
    answers: list[tuple[float, int, float, bool]] = field(default_factory=list)
    accepted: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.server.client("submit", timeout=60) as http:
            for n in range(1 << 30):
                if self.stop.wait(0.1):
                    return
                examples = [
                    {"prompt": f"outage {n} {i} =", "target": f"{n}-{i}"} for i in range(20)
                ]
                t0 = time.monotonic()
                response = http.post("/v1/tasks", json={"bucket": BUCKET, "examples": examples})
                retry = "retry-after" in response.headers
                self.answers.append((t0, response.status_code, time.monotonic() - t0, retry))
                if response.status_code == 202:
                    self.accepted += response.json()["accepted"]


def learner_status(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = http.get("/v1/learner").json()
    return body


def learner_pid(server: LiveServer) -> int:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    return next(c.pid for c in children if "learner" in c.cmdline())


def wait_for(check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - start


def test_a_postgres_restart_mid_ingestion_loses_nothing(
    start_server: ServerStarter, private_postgres: Cluster
) -> None:
    env = {"LIFELONG_ALIGNMENT_SUITE": "false", "LIFELONG_LEARNER__CANDIDATE_EVERY": "10000"}
    server = start_server(private_postgres.url, learner=True, env=env)
    ingestion = Ingestion(server)
    with server.client("admin", timeout=30) as http:
        submit(http, "copy-l1", make_examples("copy", 60, level=1, seed=0))
        wait_for(lambda: learner_status(http)["status"].get("step", 0) > 2, 120)
        holder, pid = learner_status(http)["holder"], learner_pid(server)
        sender = threading.Thread(target=ingestion.run, daemon=True)
        sender.start()
        time.sleep(2)

        private_postgres.pg_ctl("-m", "fast", "stop")
        down = time.monotonic()
        wait_for(lambda: http.get("/readyz").status_code == 503, 10)
        time.sleep(max(0.0, down + 8 - time.monotonic()))  # an outage of about 8 s
        private_postgres.pg_ctl("start")
        up = time.monotonic()

        wait_for(lambda: any(t0 > up and s == 202 for t0, s, _, _ in ingestion.answers), RECOVERY_S)
        step = learner_status(http)["status"]["step"]
        wait_for(lambda: learner_status(http)["status"]["step"] > step, RECOVERY_S)
        time.sleep(1)
        ingestion.stop.set()
        sender.join(60)

        after = learner_status(http)
        assert after["holder"] == holder and after["alive"]
        assert learner_pid(server) == pid  # recovered in place, not restarted
        during = [a for a in ingestion.answers if down <= a[0] <= up]
        assert any(s == 503 for _, s, _, _ in during), during  # the outage was seen
        assert {s for _, s, _, _ in ingestion.answers} <= {202, 503}
        assert all(retry for _, s, _, retry in ingestion.answers if s == 503)
        assert max(latency for _, _, latency, _ in ingestion.answers) < REQUEST_LIMIT_S
        body = http.get(f"/v1/buckets/{BUCKET}").json()
        assert body["train_examples"] + body["probe_examples"] == ingestion.accepted
        assert ingestion.accepted == 20 * sum(s == 202 for _, s, _, _ in ingestion.answers)
