"""``GET /v1/teacher`` and the teacher fields of ``GET /v1/buckets``, from stored rows."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from learner.store.db import write_transaction
from learner.store.difficulty import replace_item_fit
from learner.store.models import Bucket, Example
from learner.store.teacher import DecisionRecord, record_decision, save_snapshot

if TYPE_CHECKING:
    from tests.server.conftest import Api


def submit(client: TestClient, api: Api, bucket: str, prefix: str) -> None:
    body = {"bucket": bucket, "examples": api.examples(4, prefix=prefix)}
    assert client.post("/v1/tasks", json=body, headers=api.auth()).status_code == 202


def store_teacher_rows(api: Api) -> None:
    """Two rounds, a snapshot and an IRT fit, as the learner writes them."""
    with write_transaction(api.engine) as conn:
        ids = {n: i for n, i in conn.execute(select(Bucket.name, Bucket.id))}
        examples = conn.execute(select(Example.id, Example.bucket_id).order_by(Example.id)).all()
        b = np.array([1.0 if bucket == ids["hard"] else -1.0 for _, bucket in examples])
        replace_item_fit(
            conn, np.array([e for e, _ in examples]), b, np.full(len(b), 0.5), None, "1pl"
        )
        for step, bucket, scores in (
            (0, "hard", {"hard": 1.2, "easy": 1.1}),
            (10, "easy", {"hard": 0.01, "easy": 0.2}),
        ):
            record_decision(
                conn,
                DecisionRecord(
                    step, ids[bucket], "lp_zpd", scores, f"chose {bucket}", 10, 0.5, 2.0, 0.1
                ),
            )
        state = {
            "learner_ability": 0.5,
            "learner_ability_se": 0.2,
            "round": {"bucket": "easy", "start_step": 20, "steps": 3},
            "bucket_difficulty": {"hard": 1.0, "easy": -1.0},
            "ensemble": {"members": ["base:x"], "fit": None},
        }
        save_snapshot(conn, 20, "lp_zpd", state, keep=5)


def test_teacher_before_any_round(client: TestClient, api: Api) -> None:
    response = client.get("/v1/teacher", headers=api.auth("read"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["policy"] is None and body["decisions"] == [] and body["arm_scores"] == {}
    submit(client, api, "fresh", "f")
    (bucket,) = client.get("/v1/buckets", headers=api.auth("read")).json()
    assert bucket["difficulty"] is None and bucket["learner_ability"] is None
    assert bucket["teacher"] == {"focus_rounds": 0, "focus_share": None, "score": None}


def test_teacher_and_bucket_statistics(client: TestClient, api: Api) -> None:
    submit(client, api, "hard", "h")
    submit(client, api, "easy", "e")
    store_teacher_rows(api)

    body = client.get("/v1/teacher", headers=api.auth("read")).json()
    assert body["policy"] == "lp_zpd" and body["step"] == 20
    assert body["learner_ability"] == 0.5 and body["current_round"]["bucket"] == "easy"
    assert body["arm_scores"] == {"hard": 0.01, "easy": 0.2}  # the newest decision's
    assert [d["bucket"] for d in body["decisions"]] == ["easy", "hard"]
    newest = body["decisions"][0]
    assert newest["reason"] == "chose easy" and newest["reward"] == 0.1 and newest["steps"] == 10
    limited = client.get("/v1/teacher", params={"decisions": 1}, headers=api.auth("read"))
    assert len(limited.json()["decisions"]) == 1

    buckets = {b["name"]: b for b in client.get("/v1/buckets", headers=api.auth("read")).json()}
    hard = buckets["hard"]
    assert hard["difficulty"] == 1.0 and hard["difficulty_items"] == 4
    assert hard["learner_ability"] == 0.5
    assert math.isclose(hard["predicted_accuracy"], 1 / (1 + math.exp(0.5)))
    assert hard["teacher"] == {"focus_rounds": 1, "focus_share": 0.5, "score": 0.01}
    one = client.get("/v1/buckets/easy", headers=api.auth("read")).json()
    assert one["difficulty"] == -1.0 and one["teacher"]["score"] == 0.2


def test_teacher_rejects_bad_queries(client: TestClient, api: Api) -> None:
    for params in ({"decisions": -1}, {"decisions": 5000}, {"decisions": "x"}):
        response = client.get("/v1/teacher", params=params, headers=api.auth("read"))
        assert response.status_code == 422, params
        assert "decisions" in api.error(response)
    assert client.get("/v1/teacher").status_code == 401
