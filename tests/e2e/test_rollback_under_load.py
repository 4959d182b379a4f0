"""A rollback under load, end to end: a real server and learner (the micro builtin model).

A client sends completions to ``lifelong`` in a loop while an operator rolls the active
version back: no request may fail, every request started a second after the rollback
answered must be served by the version rolled back to, the history must show the event
with its reason and the operator key's name, and the learner's next version must descend
from the version rolled back to.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    MICRO_LEARNER_ENV,
    PROMOTE_EVERY_CANDIDATE,
    pause_learner,
    promoted,
    submit,
)

from learner.builtin.families import make_examples
from learner.store.db import make_engine, write_transaction
from learner.store.keys import create_key

pytestmark = pytest.mark.slow

ENV = {
    **MICRO_LEARNER_ENV,
    **PROMOTE_EVERY_CANDIDATE,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "20",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "10",
}
OPERATOR = "ops-alice"


@dataclass(frozen=True)
class Answer:
    started: float
    finished: float
    status: int
    model: str


class CompletionLoop(threading.Thread):
    """Sends completions to ``lifelong`` back to back and records every answer."""

    def __init__(self, http: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.http = http
        self.answers: list[Answer] = []
        self.stop = threading.Event()

    def run(self) -> None:
        body = {"model": "lifelong", "prompt": "copy abc =", "max_tokens": 4, "temperature": 0}
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                response = self.http.post("/v1/completions", json=body)
                model = response.json().get("model", "") if response.status_code == 200 else ""
                status = response.status_code
            except httpx.HTTPError as error:
                model, status = repr(error), 0
            self.answers.append(Answer(started, time.monotonic(), status, model))


def test_rollback_under_load(start_server: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'rollback.db'}"
    server = start_server(db_url, learner=True, env=ENV)
    engine = make_engine(db_url)
    with write_transaction(engine) as conn:
        operator_key = create_key(conn, "admin", OPERATOR)
    engine.dispose()
    operator = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {operator_key}"}, timeout=60
    )
    with server.client("admin") as http, operator:
        examples = make_examples("copy", 200, 1, seed=3)
        submit(http, "copy-l1", examples)
        server.wait_for(
            lambda: promoted(http, min_version=2), 180, "two promoted versions", interval=0.5
        )
        # Hold the learner so that no promotion lands between the rollback and the checks.
        pause_learner(server, http)
        current = http.get("/v1/adapters/active").json()["version"]
        history = http.get("/v1/adapters/history").json()
        previous = next(e["from_version"] for e in reversed(history) if e["to_version"] == current)
        assert previous is not None, history

        loop = CompletionLoop(server.client("submit", timeout=30))
        loop.start()
        time.sleep(2.0)  # load before the rollback
        reason = "v answers copy probes wrong (ticket 42)"
        response = operator.post("/v1/adapters/rollback", json={"reason": reason})
        rolled_back_at = time.monotonic()
        assert response.status_code == 200, response.text
        time.sleep(3.0)  # load after it
        loop.stop.set()
        loop.join(60)

        failed = [a for a in loop.answers if a.status != 200]
        assert not failed, failed[:5]
        after = [a for a in loop.answers if a.started >= rolled_back_at + 1.0]
        assert len(after) >= 3, loop.answers
        assert {a.model for a in after} == {f"lifelong@{previous}"}, after
        before = [a for a in loop.answers if a.finished < rolled_back_at - 0.5]
        assert before and {a.model for a in before} == {f"lifelong@{current}"}, before
        switched = min(a.started for a in loop.answers if a.model == f"lifelong@{previous}")
        print(f"{len(loop.answers)} completions, the rolled-back version served from "
              f"{switched - rolled_back_at:+.2f} s after the rollback answered")  # fmt: skip

        event = http.get("/v1/adapters/history").json()[-1]
        assert event["action"] == "rollback", event
        assert (event["from_version"], event["to_version"]) == (current, previous), event
        assert event["reason"] == reason and event["actor"] == OPERATOR, event

        # The learner continues from the version rolled back to.
        assert http.post("/v1/learner/resume").status_code == 202

        def next_version() -> Any:
            versions = [a for a in http.get("/v1/adapters").json() if a["version"] > current]
            return versions[0] if versions else None

        newer = server.wait_for(next_version, 120, "the learner's next version", interval=0.5)
        assert newer["parent_version"] == previous, newer
