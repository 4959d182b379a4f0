"""Admin actions on the registry (promote, rollback), its history, and evaluation reports."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from learner.model import registry
from learner.store.db import write_transaction
from learner.store.evaluations import record_results
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket, Example

# The test keys come from LIFELONG_API_KEYS in the order admin, submit, read, so the admin
# key's name (the actor it is logged as) is "env-1".
ADMIN = "env-1"
REJECT = {"verdict": "reject", "summary": "copy-l1 forgot 0.20 of its probes (max 0.05)"}


def _promote(client: TestClient, api: Any, version: int, **body: Any) -> Any:
    return client.post(f"/v1/adapters/{version}/promote", json=body, headers=api.auth("admin"))


def _rollback(client: TestClient, api: Any, **body: Any) -> Any:
    return client.post("/v1/adapters/rollback", json=body, headers=api.auth("admin"))


def _active(client: TestClient, api: Any) -> int | None:
    version: int | None = client.get("/v1/adapters/active", headers=api.auth("read")).json()[
        "version"
    ]
    return version


def _events(engine: Engine) -> list[tuple[str, int | None, int | None]]:
    with engine.connect() as conn:
        return [(e.action, e.from_version, e.to_version) for e in registry.history(conn)]


def test_promote_needs_an_admin_key_and_a_version(
    client: TestClient, api: Any, adapters: Any, engine: Engine
) -> None:
    version = adapters.add()
    for scope in ("submit", "read"):
        denied = client.post(f"/v1/adapters/{version}/promote", headers=api.auth(scope))
        assert denied.status_code == 403, scope
    assert client.post(f"/v1/adapters/{version}/promote").status_code == 401
    missing = _promote(client, api, 42)
    assert missing.status_code == 404 and "42" in api.error(missing)
    too_long = _promote(client, api, version, reason="r" * 1001)
    assert too_long.status_code == 422 and "reason" in api.error(too_long)
    assert _promote(client, api, version, forse=True).status_code == 422
    assert _promote(client, api, version, reason="a\u0000b").status_code == 422
    assert _events(engine) == []


def test_promote_a_candidate(client: TestClient, api: Any, adapters: Any) -> None:
    first, second = adapters.add(), adapters.add()
    # No body at all is a promotion with the defaults.
    response = client.post(f"/v1/adapters/{first}/promote", headers=api.auth("admin"))
    assert response.status_code == 200, response.text
    event = response.json()
    assert set(event) == {
        "id", "action", "actor", "created_at", "from_version", "to_version", "reason",
    }  # fmt: skip
    assert (event["action"], event["actor"], event["from_version"], event["to_version"]) == (
        "promote",
        ADMIN,
        None,
        first,
    )
    assert event["reason"] == f"promoted by {ADMIN}"
    again = _promote(client, api, first)
    assert again.status_code == 409 and "already active" in api.error(again)
    # force=true on a version that passed the gate is an ordinary promotion.
    forced = _promote(client, api, second, force=True, reason="better on copy")
    assert forced.status_code == 200
    assert forced.json()["action"] == "promote" and forced.json()["reason"] == "better on copy"
    assert forced.json()["from_version"] == first
    assert _active(client, api) == second
    listed = client.get("/v1/adapters", headers=api.auth("read")).json()
    assert [(a["status"], a["active"]) for a in listed] == [("promoted", False), ("promoted", True)]


def test_a_version_that_failed_the_gate_needs_force(
    client: TestClient, api: Any, adapters: Any, engine: Engine
) -> None:
    rejected = adapters.add(status="rejected", gate_report=REJECT)
    # A candidate whose report says reject (e.g. an older row) needs force as well.
    flagged = adapters.add(gate_report=REJECT)
    for version in (rejected, flagged):
        refused = _promote(client, api, version)
        assert refused.status_code == 409
        assert api.error(refused) == (
            f"v{version} failed the gate: {REJECT['summary']}; pass force=true to promote it anyway"
        )
    assert _events(engine) == []
    forced = _promote(client, api, rejected, force=True, reason="the drop is a flaky probe")
    assert forced.status_code == 200, forced.text
    event = forced.json()
    assert (event["action"], event["actor"], event["to_version"]) == ("force", ADMIN, rejected)
    assert event["reason"] == "the drop is a flaky probe"
    assert _active(client, api) == rejected
    # Once forced, the version is promoted and served like any other.
    models = client.get("/v1/models", headers=api.auth("read")).json()["data"]
    assert f"lifelong@{rejected}" in [m["id"] for m in models]


def test_versions_without_sound_files_are_not_promoted(
    client: TestClient, api: Any, adapters: Any, engine: Engine
) -> None:
    pending = adapters.add(status="pending")
    retired = adapters.add(status="retired")
    corrupt = adapters.add()
    missing = adapters.add()
    adapters.corrupt(corrupt)
    adapters.weights(missing).unlink()
    expected = {
        pending: "is pending",
        retired: "is retired",
        corrupt: "failed its integrity check",
        missing: "has no weights file",
    }
    for version, fragment in expected.items():
        for force in (False, True):
            response = _promote(client, api, version, force=force)
            assert response.status_code == 409, (version, response.text)
            assert fragment in api.error(response)
    assert _events(engine) == []


def test_rollback_walks_back_through_promotions(
    client: TestClient, api: Any, adapters: Any
) -> None:
    nothing = _rollback(client, api)
    assert nothing.status_code == 409
    assert api.error(nothing) == "nothing to roll back: the base model is active"
    versions = [adapters.add() for _ in range(3)]
    for version in versions:
        assert _promote(client, api, version).status_code == 200
    steps = []
    for _ in range(3):
        response = _rollback(client, api)
        assert response.status_code == 200, response.text
        event = response.json()
        assert event["action"] == "rollback" and event["actor"] == ADMIN
        steps.append((event["from_version"], event["to_version"]))
    assert steps == [(versions[2], versions[1]), (versions[1], versions[0]), (versions[0], None)]
    assert _active(client, api) is None
    again = _rollback(client, api, reason="once more")
    assert again.status_code == 409 and "nothing to roll back" in api.error(again)


def test_rollback_to_a_named_version(client: TestClient, api: Any, adapters: Any) -> None:
    old, current = adapters.add(), adapters.add()
    candidate = adapters.add()
    rejected = adapters.add(status="rejected", gate_report=REJECT)
    retired = adapters.add(status="retired")
    for version in (old, current):
        assert _promote(client, api, version).status_code == 200
    expected = {
        candidate: (409, "never active; promote it instead"),
        rejected: (409, "it is rejected"),
        retired: (409, "it is retired"),
        current: (409, "already active"),
        99: (404, "does not exist"),
    }
    for version, (code, fragment) in expected.items():
        response = _rollback(client, api, to=version)
        assert response.status_code == code, (version, response.text)
        assert fragment in api.error(response)
    assert _rollback(client, api, to=-1).status_code == 422
    adapters.corrupt(old)
    corrupt = _rollback(client, api, to=old)
    assert corrupt.status_code == 409 and "integrity check" in api.error(corrupt)
    # The default target is checked alike, with a hint to choose another.
    default = _rollback(client, api)
    assert default.status_code == 409
    assert "previously active" in api.error(default) and "'to'" in api.error(default)
    base = _rollback(client, api, to=0, reason="back to the base model")
    assert base.status_code == 200
    assert (base.json()["from_version"], base.json()["to_version"]) == (current, None)
    assert base.json()["reason"] == "back to the base model"
    already = _rollback(client, api, to=0)
    assert already.status_code == 409 and "base model is already active" in api.error(already)
    back = _rollback(client, api, to=current)
    assert back.status_code == 200 and back.json()["to_version"] == current


def test_rollback_needs_an_admin_key(client: TestClient, api: Any) -> None:
    for scope in ("submit", "read"):
        assert client.post("/v1/adapters/rollback", headers=api.auth(scope)).status_code == 403


def test_history_lists_every_event_oldest_first(
    client: TestClient, api: Any, adapters: Any, engine: Engine
) -> None:
    assert client.get("/v1/adapters/history", headers=api.auth("read")).json() == []
    first, second = adapters.add(), adapters.add(status="rejected", gate_report=REJECT)
    with write_transaction(engine) as conn:
        registry.promote(conn, first, "learner", "gate passed")
    assert _promote(client, api, second, force=True, reason="looked fine to me").status_code == 200
    assert _rollback(client, api, reason="users complained").status_code == 200
    with write_transaction(engine) as conn:
        registry.log_reset(conn, "learner", "3 rejections in a row")
    assert client.get("/v1/adapters/history").status_code == 401
    history = client.get("/v1/adapters/history", headers=api.auth("read"))
    assert history.status_code == 200
    rows = [
        (e["action"], e["actor"], e["from_version"], e["to_version"], e["reason"])
        for e in history.json()
    ]
    assert rows == [
        ("promote", "learner", None, first, "gate passed"),
        ("force", ADMIN, first, second, "looked fine to me"),
        ("rollback", ADMIN, second, first, "users complained"),
        ("reset", "learner", first, first, "3 rejections in a row"),
    ]
    ids = [e["id"] for e in history.json()]
    assert ids == sorted(ids) and all(e["created_at"] for e in history.json())


def _store_answers(engine: Any, version: int | None, rights: list[bool]) -> None:
    """Probe answers of ``version`` (None: base) on the probes of bucket ``copy-l1``."""
    with write_transaction(engine) as conn:
        bucket_id, probe_ids = _copy_probes(conn)
        answers = [(eid, right, "x") for eid, right in zip(probe_ids, rights, strict=False)]
        record_results(conn, version, bucket_id, answers, step=10)


def _copy_probes(conn: Any) -> tuple[int, list[int]]:
    examples = [NewExample(f"copy {w} =", w) for w in ("ab", "cd", "ef", "gh")]
    ingest_batch(conn, "copy-l1", examples, kind="task", grader="exact", probe_tenths=10)
    bucket_id = conn.execute(select(Bucket.id).where(Bucket.name == "copy-l1")).scalar_one()
    ids = conn.execute(
        select(Example.id).where(Example.bucket_id == bucket_id).order_by(Example.id)
    ).scalars()
    return bucket_id, list(ids)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_evaluation_reports(client: TestClient, api: Any, adapters: Any, engine: Any) -> None:
    first, second = adapters.add(), adapters.add()
    _store_answers(engine, None, [True, False, False, False])  # base: 1 of 4
    _store_answers(engine, first, [True, True, True, False])  # v1: 3 of 4
    read = api.auth("read")
    one = client.get(f"/v1/adapters/{first}", headers=read).json()["evaluation"]
    assert one["accuracy"] == {"copy-l1": 0.75} and one["probes"] == {"copy-l1": 4}
    assert one["model"] == f"lifelong@{first}"
    # NFR against the active model (the base): no probe right under it is wrong under v1.
    assert one["negative_flip_rate"] == {"rate": 0.0, "lost": 0, "probes": 4}
    listed = client.get("/v1/adapters", headers=read).json()
    assert [a["evaluation"] is None for a in listed] == [False, True]
    assert _promote(client, api, first).status_code == 200
    matrix = client.get("/v1/evaluations", headers=read)
    assert matrix.status_code == 200, matrix.text
    body = matrix.json()
    assert body["active_version"] == first and body["buckets"] == ["copy-l1"]
    assert [(r["version"], r["accuracy"]) for r in body["versions"]] == [
        (None, {"copy-l1": 0.25}),
        (first, {"copy-l1": 0.75}),
    ]
    assert second not in [r["version"] for r in body["versions"]]
    assert client.get("/v1/evaluations").status_code == 401


def test_evaluations_from_the_real_matrix(
    client: TestClient, api: Any, adapters: Any, engine: Any
) -> None:
    """The matrix and a version's report, computed by the real SQL on every backend."""
    read = api.auth("read")
    first = adapters.add()
    second = adapters.add(parent=first)
    # Nothing evaluated yet: an empty matrix, and versions without an evaluation.
    empty = client.get("/v1/evaluations", headers=read)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"active_version": None, "buckets": [], "versions": []}
    unevaluated = client.get(f"/v1/adapters/{second}", headers=read)
    assert unevaluated.status_code == 200, unevaluated.text
    assert unevaluated.json() == {
        "version": second,
        "parent_version": first,
        "base_model": "builtin:micro",
        "status": "candidate",
        "train_step": 10,
        "sha256": registry.sha256_file(adapters.weights(second)),
        "path": registry.version_relpath(second),
        "created_at": unevaluated.json()["created_at"],
        "active": False,
        "provenance": {"base_model": "builtin:micro", "version": second, "parent_version": first},
        "metrics": {},
        "gate_report": None,
        "evaluation": None,
    }
    assert unevaluated.json()["created_at"].endswith("Z")

    _store_answers(engine, None, [True, False, False, False])  # base: 0.25
    _store_answers(engine, first, [True, True, True, False])  # v1: 0.75
    _store_answers(engine, second, [False, True, False, False])  # v2 (child of v1): 0.25
    assert _promote(client, api, first).status_code == 200
    matrix = client.get("/v1/evaluations", headers=read)
    assert matrix.status_code == 200, matrix.text
    body = matrix.json()
    assert (body["active_version"], body["buckets"]) == (first, ["copy-l1"])
    # Each row against the active v1: base and v2 both lose probes 0 and 2 that v1 answers.
    base_row = {
        "version": None,
        "model": "base",
        "parent_version": None,
        "accuracy": {"copy-l1": 0.25},
        "probes": {"copy-l1": 4},
        "average_accuracy": 0.25,
        "backward_transfer": None,
        "forgetting": None,
        "forgetting_by_bucket": {},
        "buckets": 1,
        "negative_flip_rate": {"rate": 0.5, "lost": 2, "probes": 4},
        "status": "base",
        "train_step": 0,
        "active": False,
    }
    first_row = {
        "version": first,
        "model": f"lifelong@{first}",
        "parent_version": None,
        "accuracy": {"copy-l1": 0.75},
        "probes": {"copy-l1": 4},
        "average_accuracy": 0.75,
        "backward_transfer": None,  # only the base model evaluated copy-l1 before it
        "forgetting": 0.0,  # better than the base model's 0.25
        "forgetting_by_bucket": {"copy-l1": 0.0},
        "buckets": 1,
        "negative_flip_rate": None,  # the active version is not compared with itself
        "status": "promoted",
        "train_step": 10,
        "active": True,
    }
    second_row = {
        "version": second,
        "model": f"lifelong@{second}",
        "parent_version": first,
        "accuracy": {"copy-l1": 0.25},
        "probes": {"copy-l1": 4},
        "average_accuracy": 0.25,
        "backward_transfer": -0.5,  # 0.25 now against 0.75 right after v1 learned it
        "forgetting": 0.5,  # down from the lineage's best, v1's 0.75
        "forgetting_by_bucket": {"copy-l1": 0.5},
        "buckets": 1,
        "negative_flip_rate": {"rate": 0.5, "lost": 2, "probes": 4},
        "status": "candidate",
        "train_step": 10,
        "active": False,
    }
    assert body["versions"] == [base_row, first_row, second_row]
    # A version's own report is its row of the matrix, without the registry columns.
    one = client.get(f"/v1/adapters/{second}", headers=read)
    assert one.status_code == 200, one.text
    registry_columns = ("status", "train_step", "active")
    assert one.json()["evaluation"] == {
        k: v for k, v in second_row.items() if k not in registry_columns
    }
    assert (one.json()["version"], one.json()["status"], one.json()["active"]) == (
        second,
        "candidate",
        False,
    )
