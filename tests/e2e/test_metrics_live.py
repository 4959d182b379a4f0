"""``/metrics`` of a real ``lifelong serve`` with its learner (the micro builtin model).

Scraped over HTTP and parsed with prometheus-client's text parser: every series is there
before any work, and each moves when the work happens: submissions raise ingestion and
duplicates, requests raise the request counter, the learner's training raises its steps
and reports loss, throughput, liveness and its lease holder, the teacher's rounds and the
gate's verdicts are counted, a promotion sets the active version and a rollback through
the API moves it back and counts the rollback.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import MICRO_LEARNER_ENV, PROMOTE_EVERY_CANDIDATE, pause_learner
from prometheus_client.parser import text_string_to_metric_families

from learner.builtin.families import make_examples

pytestmark = pytest.mark.slow

ENV = {
    **MICRO_LEARNER_ENV,
    **PROMOTE_EVERY_CANDIDATE,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "10",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "5",
}
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


def test_metrics_move_with_the_work(start_server: Any, db_url: str) -> None:
    server = start_server(db_url, learner=True, env=ENV)
    names, start = scrape(server.url)
    assert set(SERIES) <= names, set(SERIES) - names

    with server.client("admin") as http:
        examples = make_examples("copy", 120, 1, seed=5)
        body = {"bucket": BUCKET, "examples": examples}
        first, again = (http.post("/v1/tasks", json=body).json() for _ in range(2))
        stored = first["accepted"]  # a generated batch may repeat an example
        assert stored > 100 and again["duplicates"] == len(examples)

        def trained_and_promoted() -> Samples | None:
            _, now = scrape(server.url)
            done = value(now, "lifelong_active_version") >= 1
            done &= value(now, "lifelong_training_steps_total") > 0
            # A round's decision is stored when the round ends.
            done &= value(now, "lifelong_teacher_decisions_total", bucket=BUCKET) >= 1
            return now if done else None

        trained = server.wait_for(trained_and_promoted, 180, "training, a round, a promotion")
        pause_learner(server, http)
        active = http.get("/v1/adapters/active").json()["version"]
        rolled = http.post("/v1/adapters/rollback", json={"reason": "metrics test"})
        assert rolled.status_code == 200, rolled.text
        target = rolled.json()["to_version"] or 0

    def rolled_back() -> Samples | None:
        _, now = scrape(server.url)  # the store reading is reused for up to a second
        return now if value(now, "lifelong_rollbacks_total") == 1 else None

    after = server.wait_for(rolled_back, 10, "the rollback in the metrics", interval=0.3)
    assert target != active
    assert value(after, "lifelong_active_version") == target

    assert value(start, "lifelong_examples_ingested_total", bucket=BUCKET) == 0
    assert value(trained, "lifelong_examples_ingested_total", bucket=BUCKET) == stored
    duplicates = value(trained, "lifelong_duplicates_total", bucket=BUCKET)
    assert duplicates == first["duplicates"] + again["duplicates"]
    tasks = {"route": "/v1/tasks", "method": "POST", "status": "202"}
    assert value(trained, "lifelong_http_requests_total", **tasks) == 2
    assert value(trained, "lifelong_learner_up") == 1.0
    assert len(holders(trained)) == 1
    assert value(trained, "lifelong_training_loss") > 0
    assert value(trained, "lifelong_training_tokens_per_second") > 0
    assert value(trained, "lifelong_teacher_decisions_total", bucket=BUCKET) >= 1
    assert value(trained, "lifelong_gate_verdicts_total", verdict="promote", reason="gain") >= 1
    assert value(start, "lifelong_training_steps_total") == 0
    assert value(after, "lifelong_training_steps_total") >= value(
        trained, "lifelong_training_steps_total"
    )
    rollback = {"route": "/v1/adapters/rollback", "method": "POST", "status": "200"}
    assert value(after, "lifelong_http_requests_total", **rollback) == 1
