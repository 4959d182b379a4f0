"""``GET /metrics``: scraped from the real app (lifespan, SQLite and PostgreSQL) and parsed
with prometheus-client's own text parser; every series is there and moves with the work.

The learner's side (steps, decisions, gate verdicts, the lease) is written through the
same store and registry functions the learner uses; promotions and rollbacks go through
the API. The store reading is cached for a second in production; these tests turn the
cache off (``cache_seconds = 0``) except where they check the cache itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from learner.evaluation.gate import Check, GateReport
from learner.store import lease
from learner.store.buckets import get_bucket
from learner.store.db import write_transaction
from learner.store.teacher import DecisionRecord, record_decision

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
    "lifelong_registry_events_total",
    "lifelong_learner_up",
    "lifelong_learner_lease_info",
    "lifelong_learner_heartbeat_age_seconds",
    "lifelong_inference_queue_depth",
    "lifelong_inference_queue_capacity",
    "lifelong_store_scrape_success",
)
SECTIONS = ("examples", "teacher", "gate", "registry", "learner")
HOLDER = "host-a:4242"


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape: family names (as exposed, ``_total`` kept) and sample values."""

    names: set[str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for sample, labels in self.samples if sample == name]


def scrape(client: TestClient) -> Scrape:
    """Scrape ``/metrics`` without a key and parse it as Prometheus would."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    names: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        # The parser drops a counter's ``_total`` from the family name; its samples keep it.
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(names, samples)


@pytest.fixture
def metrics_client(client: TestClient) -> TestClient:
    client.app.state.metrics.store.cache_seconds = 0
    return client


def submit(client: TestClient, api: Any, bucket: str, n: int, start: int = 0) -> int:
    """Submit ``n`` new examples to ``bucket``; returns the bucket's id."""
    body = {"bucket": bucket, "examples": api.examples(n, start=start)}
    assert client.post("/v1/tasks", json=body, headers=api.auth()).status_code == 202
    with api.engine.connect() as conn:
        found = get_bucket(conn, bucket)
    assert found is not None
    return int(found.id)


def gate_report(verdict: str, failed: tuple[str, ...] = (), gain: float | None = 0.1) -> Any:
    """A stored gate report, made with the gate's own classes."""
    checks = [
        Check(kind, kind, kind not in failed, 0.0, 0.0, f"{kind} check")
        for kind in ("alignment", "forgetting", "nfr")
    ]
    checks.append(Check("gain", "gain", verdict == "promote", gain, 0.0, "gain check"))
    return GateReport(verdict, tuple(checks), {}, "base", f"{verdict}: test").to_dict()


def test_every_series_is_exported_without_a_key(metrics_client: TestClient, api: Any) -> None:
    submit(metrics_client, api, "arith", 2)
    assert lease.try_acquire(api.engine, HOLDER, ttl=15)
    status = {"step": 3, "last_loss": 2.5, "tokens_per_second": 10.0}
    assert lease.heartbeat(api.engine, HOLDER, status)
    found = scrape(metrics_client)
    assert set(SERIES) <= found.names, set(SERIES) - found.names
    for section in SECTIONS:
        assert found.value("lifelong_store_scrape_success", section=section) == 1.0
    assert "process_resident_memory_bytes" in found.names  # the process collector is on


def test_metrics_is_documented_as_text(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    content = operation["responses"]["200"]["content"]
    assert "text/plain" in content and "application/openmetrics-text" in content
    assert "security" not in operation  # public, like /healthz


def test_openmetrics_when_asked(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_requests_are_counted_by_route_template_and_status(
    metrics_client: TestClient, api: Any
) -> None:
    before = scrape(metrics_client)
    read = api.auth("read")
    for version in (3, 4):  # two raw paths, one template
        assert metrics_client.get(f"/v1/adapters/{version}", headers=read).status_code == 404
    assert metrics_client.get("/v1/adapters/5", headers=api.bearer("wrong")).status_code == 401
    assert metrics_client.get("/no/such/path").status_code == 404
    assert metrics_client.get("/healthz?x=1").status_code == 422
    assert metrics_client.request("BREW", "/healthz").status_code == 405
    after = scrape(metrics_client)

    def rise(route: str, status: str, method: str = "GET") -> float:
        labels = {"route": route, "method": method, "status": status}
        name = "lifelong_http_requests_total"
        return (after.value(name, **labels) or 0) - (before.value(name, **labels) or 0)

    assert rise("/v1/adapters/{version}", "404") == 2
    # Turned away by the auth middleware before routing, yet labelled with its route.
    assert rise("/v1/adapters/{version}", "401") == 1
    assert rise("unmatched", "404") == 1
    assert rise("/healthz", "422") == 1
    assert rise("/healthz", "405", method="other") == 1  # made-up methods share one label
    assert rise("/metrics", "200") == 1  # the first scrape, counted once it was answered
    routes = {labels["route"] for labels in after.labelled("lifelong_http_requests_total")}
    assert not any("/3" in r or "/4" in r or "/no/" in r for r in routes), routes
    histogram = after.value(
        "lifelong_http_request_duration_seconds_count",
        route="/v1/adapters/{version}",
        method="GET",
        status="404",
    )
    assert histogram == 2


def test_ingestion_and_duplicates_move(metrics_client: TestClient, api: Any) -> None:
    submit = api.auth()
    body = {"bucket": "arith", "examples": api.examples(4)}
    assert metrics_client.post("/v1/tasks", json=body, headers=submit).status_code == 202
    first = scrape(metrics_client)
    assert first.value("lifelong_examples_ingested_total", bucket="arith") == 4
    assert first.value("lifelong_duplicates_total", bucket="arith") == 0
    again = {"bucket": "arith", "examples": api.examples(2) + api.examples(1, start=9)}
    accepted = metrics_client.post("/v1/tasks", json=again, headers=submit).json()
    assert (accepted["accepted"], accepted["duplicates"]) == (1, 2)
    second = scrape(metrics_client)
    assert second.value("lifelong_examples_ingested_total", bucket="arith") == 5
    assert second.value("lifelong_duplicates_total", bucket="arith") == 2
    assert second.value("lifelong_examples_ingested_total", bucket="arith") == api.count()


def test_learner_progress_and_liveness_from_the_lease(metrics_client: TestClient, api: Any) -> None:
    idle = scrape(metrics_client)
    assert idle.value("lifelong_learner_up") == 0.0
    assert idle.value("lifelong_training_steps_total") is None  # no learner has reported
    assert lease.try_acquire(api.engine, HOLDER, ttl=15)
    status = {"step": 40, "last_loss": 1.75, "tokens_per_second": 1234.5}
    assert lease.heartbeat(api.engine, HOLDER, status)
    training = scrape(metrics_client)
    assert training.value("lifelong_learner_up") == 1.0
    assert training.value("lifelong_learner_lease_info", holder=HOLDER) == 1.0
    assert training.value("lifelong_training_steps_total") == 40
    assert training.value("lifelong_training_loss") == 1.75
    assert training.value("lifelong_training_tokens_per_second") == 1234.5
    age = training.value("lifelong_learner_heartbeat_age_seconds")
    assert age is not None and 0 <= age < 15
    assert lease.heartbeat(api.engine, HOLDER, {**status, "step": 41, "last_loss": 1.5})
    later = scrape(metrics_client)
    assert later.value("lifelong_training_steps_total") == 41
    assert later.value("lifelong_training_loss") == 1.5
    lease.release(api.engine, HOLDER)  # the heartbeat is back-dated: the learner is gone
    gone = scrape(metrics_client)
    assert gone.value("lifelong_learner_up") == 0.0
    assert gone.value("lifelong_training_tokens_per_second") == 0.0
    assert gone.value("lifelong_training_steps_total") == 41  # the progress it made stays


def test_teacher_decisions_per_bucket_and_rests(metrics_client: TestClient, api: Any) -> None:
    arith, copy = (submit(metrics_client, api, bucket, 1) for bucket in ("arith", "copy"))
    with write_transaction(api.engine) as conn:
        for step, bucket_id in enumerate([arith, arith, copy, None]):
            record = DecisionRecord(step, bucket_id, "lp_zpd", {}, "test", 10, None, None, None)
            record_decision(conn, record)
    found = scrape(metrics_client)
    assert found.value("lifelong_teacher_decisions_total", bucket="arith") == 2
    assert found.value("lifelong_teacher_decisions_total", bucket="copy") == 1
    assert found.value("lifelong_teacher_rests_total") == 1


def test_gate_verdicts_by_reason(metrics_client: TestClient, adapters: Any) -> None:
    adapters.add("promoted", gate_report=gate_report("promote"))
    adapters.add("rejected", gate_report=gate_report("reject", failed=("forgetting",)))
    adapters.add("rejected", gate_report=gate_report("reject", failed=("nfr", "alignment")))
    adapters.add("candidate", gate_report=gate_report("hold", gain=-0.2))
    adapters.add("candidate")  # not judged yet: no verdict
    first = scrape(metrics_client)
    verdicts = {
        (labels["verdict"], labels["reason"]): first.value("lifelong_gate_verdicts_total", **labels)
        for labels in first.labelled("lifelong_gate_verdicts_total")
    }
    assert verdicts == {
        ("promote", "gain"): 1,
        ("reject", "forgetting"): 1,
        ("reject", "alignment+nfr"): 1,
        ("hold", "below_min_gain"): 1,
    }
    adapters.add("candidate", gate_report=gate_report("hold", gain=None))
    adapters.add("rejected", gate_report=gate_report("reject", failed=("forgetting",)))
    second = scrape(metrics_client)  # new versions are read; the known ones come from memory
    assert second.value("lifelong_gate_verdicts_total", verdict="reject", reason="forgetting") == 2
    assert second.value("lifelong_gate_verdicts_total", verdict="hold", reason="no_evidence") == 1


def test_promotion_and_rollback_through_the_api(
    metrics_client: TestClient, api: Any, adapters: Any
) -> None:
    one, two = adapters.add(), adapters.add()
    admin = api.auth("admin")
    start = scrape(metrics_client)
    assert start.value("lifelong_active_version") == 0  # the base model
    assert start.value("lifelong_rollbacks_total") == 0
    for version in (one, two):
        promoted = metrics_client.post(f"/v1/adapters/{version}/promote", headers=admin)
        assert promoted.status_code == 200, promoted.text
    assert scrape(metrics_client).value("lifelong_active_version") == two
    rolled = metrics_client.post("/v1/adapters/rollback", json={"reason": "test"}, headers=admin)
    assert rolled.status_code == 200, rolled.text
    after = scrape(metrics_client)
    assert after.value("lifelong_active_version") == one
    assert after.value("lifelong_rollbacks_total") == 1
    assert after.value("lifelong_registry_events_total", action="promote") == 2
    assert after.value("lifelong_registry_events_total", action="rollback") == 1


def test_a_failing_store_read_leaves_the_rest_of_the_scrape(
    metrics_client: TestClient, api: Any, engine: Engine
) -> None:
    submit(metrics_client, api, "arith", 3)
    with write_transaction(engine) as conn:  # the teacher's table is gone: its read fails
        conn.execute(text("ALTER TABLE teacher_decisions RENAME TO teacher_decisions_gone"))
    found = scrape(metrics_client)
    assert found.value("lifelong_store_scrape_success", section="teacher") == 0.0
    assert found.value("lifelong_teacher_decisions_total") is None
    for section in set(SECTIONS) - {"teacher"}:  # read after the failed one, too
        assert found.value("lifelong_store_scrape_success", section=section) == 1.0
    assert found.value("lifelong_examples_ingested_total", bucket="arith") == 3
    assert "lifelong_http_requests_total" in found.names
    assert found.value("lifelong_inference_queue_depth") == 0


def test_the_store_reading_is_reused_within_the_cache_time(client: TestClient, api: Any) -> None:
    client.app.state.metrics.store.cache_seconds = 3600
    submit(client, api, "arith", 1)
    first = scrape(client)
    submit(client, api, "arith", 2, start=5)
    second = scrape(client)
    # The store is not read again; what the server counts itself is live.
    assert second.value("lifelong_examples_ingested_total", bucket="arith") == 1
    assert first.value("lifelong_examples_ingested_total", bucket="arith") == 1
    http = {"route": "/v1/tasks", "method": "POST", "status": "202"}
    assert second.value("lifelong_http_requests_total", **http) == 2
