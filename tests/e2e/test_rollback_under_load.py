"""A rollback under load, end to end, watched through ``/metrics``: a real server and
learner (the micro builtin model), on SQLite and PostgreSQL.

One trained service serves both checks (training to two promotions is the slow part):
- ``/metrics``, scraped over HTTP and parsed with prometheus-client's text parser: every
  series is there before any work, and each moves when the work happens: submissions raise
  ingestion and duplicates, requests raise the request counter, the learner's training
  raises its steps and reports loss, throughput, liveness and its lease holder, the
  teacher's rounds and the gate's verdicts are counted, a promotion sets the active version
  and a rollback through the API moves it back and counts the rollback;
- the rollback itself, while a client sends completions to ``lifelong`` in a loop: no
  request may fail, every request started a second after the rollback answered must be
  served by the version rolled back to, the history must show the event with its reason
  and the operator key's name, and the learner's next version must descend from the
  version rolled back to.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers import (
    MICRO_LEARNER_ENV,
    PROMOTE_EVERY_CANDIDATE,
    pause_learner,
    promoted,
)
from prometheus_client.parser import text_string_to_metric_families

from learner.builtin.families import make_examples
from learner.store.db import make_engine, write_transaction
from learner.store.keys import create_key

pytestmark = pytest.mark.slow

ENV = {
    **MICRO_LEARNER_ENV,
    **PROMOTE_EVERY_CANDIDATE,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "10",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "5",
}
OPERATOR = "ops-alice"
SERIES = (
    "lifelong_http_requests_total",
    "lifelong_http_request_duration_seconds",
    "lifelong_examples_ingested_total",
    "lifelong_duplicates_total",
    "lifelong_training_steps_total",
    "lifelong_training_loss",
    "lifelong_training_tokens_per_second",
    "lifelong_teacher_decisions_total",
    "lifelong_teacher_rests_total",
    "lifelong_gate_verdicts_total",
    "lifelong_active_version",
    "lifelong_rollbacks_total",
    "lifelong_learner_up",
    "lifelong_learner_lease_info",
    "lifelong_inference_queue_depth",
)
BUCKET = "copy-l1"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[set[str], Samples]:
    """Family names (counters with their ``_total``) and samples of one scrape, keyless."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series has no sample yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def holders(samples: Samples) -> set[str]:
    return {dict(labels)["holder"] for name, labels in samples if name.endswith("lease_info")}


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


def test_rollback_under_load_moves_the_metrics(start_server: Any, db_url: str) -> None:
    server = start_server(db_url, learner=True, env=ENV)
    names, start = scrape(server.url)
    assert set(SERIES) <= names, set(SERIES) - names
    engine = make_engine(db_url)
    with write_transaction(engine) as conn:
        operator_key = create_key(conn, "admin", OPERATOR)
    engine.dispose()
    operator = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {operator_key}"}, timeout=60
    )
    with server.client("admin") as http, operator:
        examples = make_examples("copy", 200, 1, seed=3)
        body = {"bucket": BUCKET, "examples": examples}
        first, again = (http.post("/v1/tasks", json=body).json() for _ in range(2))
        stored = first["accepted"]  # a generated batch may repeat an example
        assert stored > 150 and again["duplicates"] == len(examples)

        def two_promotions_in_the_metrics() -> Samples | None:
            if not promoted(http, min_version=2):
                return None
            _, now = scrape(server.url)
            done = value(now, "lifelong_active_version") >= 2
            # A round's decision is stored when the round ends.
            done &= value(now, "lifelong_teacher_decisions_total", bucket=BUCKET) >= 1
            return now if done else None

        trained = server.wait_for(
            two_promotions_in_the_metrics, 180, "two promotions", interval=0.5
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
        check_the_switch(loop.answers, rolled_back_at, current, previous)

        event = http.get("/v1/adapters/history").json()[-1]
        assert event["action"] == "rollback", event
        assert (event["from_version"], event["to_version"]) == (current, previous), event
        assert event["reason"] == reason and event["actor"] == OPERATOR, event

        def rolled_back() -> Samples | None:
            _, now = scrape(server.url)  # the store reading is reused for up to a second
            return now if value(now, "lifelong_rollbacks_total") == 1 else None

        after = server.wait_for(rolled_back, 10, "the rollback in the metrics", interval=0.3)
        assert value(after, "lifelong_active_version") == previous
        check_the_counts(start, trained, after, stored, first["duplicates"] + len(examples))

        # The learner continues from the version rolled back to.
        assert http.post("/v1/learner/resume").status_code == 202

        def next_version() -> Any:
            versions = [a for a in http.get("/v1/adapters").json() if a["version"] > current]
            return versions[0] if versions else None

        newer = server.wait_for(next_version, 120, "the learner's next version", interval=0.5)
        assert newer["parent_version"] == previous, newer


def check_the_switch(
    answers: list[Answer], rolled_back_at: float, current: int, previous: int
) -> None:
    """No request failed, and the served version switched within a second."""
    failed = [a for a in answers if a.status != 200]
    assert not failed, failed[:5]
    after = [a for a in answers if a.started >= rolled_back_at + 1.0]
    assert len(after) >= 3, answers
    assert {a.model for a in after} == {f"lifelong@{previous}"}, after
    before = [a for a in answers if a.finished < rolled_back_at - 0.5]
    assert before and {a.model for a in before} == {f"lifelong@{current}"}, before
    switched = min(a.started for a in answers if a.model == f"lifelong@{previous}")
    print(f"{len(answers)} completions, the rolled-back version served from "
          f"{switched - rolled_back_at:+.2f} s after the rollback answered")  # fmt: skip


def check_the_counts(
    start: Samples, trained: Samples, after: Samples, stored: float, duplicates: float
) -> None:
    """Each series moved with the work: before any (start), after training to two
    promotions (trained) and after the rollback (after)."""
    assert value(start, "lifelong_examples_ingested_total", bucket=BUCKET) == 0
    assert value(trained, "lifelong_examples_ingested_total", bucket=BUCKET) == stored
    assert value(trained, "lifelong_duplicates_total", bucket=BUCKET) == duplicates
    tasks = {"route": "/v1/tasks", "method": "POST", "status": "202"}
    assert value(trained, "lifelong_http_requests_total", **tasks) == 2
    assert value(trained, "lifelong_learner_up") == 1.0
    assert len(holders(trained)) == 1
    assert value(trained, "lifelong_training_loss") > 0
    assert value(trained, "lifelong_training_tokens_per_second") > 0
    assert value(trained, "lifelong_gate_verdicts_total", verdict="promote", reason="gain") >= 1
    assert value(start, "lifelong_training_steps_total") == 0
    steps = value(trained, "lifelong_training_steps_total")
    assert steps > 0 and value(after, "lifelong_training_steps_total") >= steps
    rollback = {"route": "/v1/adapters/rollback", "method": "POST", "status": "200"}
    assert value(after, "lifelong_http_requests_total", **rollback) == 1
