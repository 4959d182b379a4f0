"""Adapters, learner control and model serving through the in-process app."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from learner.model import registry
from learner.store import control
from learner.store.db import write_transaction
from server.serving.engine import UnknownModel, parse_model_name


def _add_version(engine: Engine, tmp_path: Path, version: int, parent: int | None) -> None:
    path = tmp_path / f"v{version}"
    path.mkdir()
    (path / registry.ADAPTER_WEIGHTS).write_bytes(b"weights %d" % version)
    provenance = {"base_model": "builtin:micro", "train_step": 10 * version,
                  "parent_version": parent}  # fmt: skip
    with write_transaction(engine) as conn:
        registry.record_version(conn, version, path, provenance, {"note": "test"})


def test_adapters_before_any_version(client: TestClient, api: Any) -> None:
    assert client.get("/v1/adapters", headers=api.auth("read")).json() == []
    active = client.get("/v1/adapters/active", headers=api.auth("read")).json()
    assert active == {"version": None, "model": "base", "adapter": None}
    missing = client.get("/v1/adapters/7", headers=api.auth("read"))
    assert missing.status_code == 404 and "7" in api.error(missing)


def test_adapters_and_active_version(
    client: TestClient, api: Any, engine: Engine, tmp_path: Path
) -> None:
    _add_version(engine, tmp_path, 1, None)
    _add_version(engine, tmp_path, 2, 1)
    with write_transaction(engine) as conn:
        registry.promote(conn, 2, "test", "better")
    listed = client.get("/v1/adapters", headers=api.auth("read")).json()
    assert [(a["version"], a["status"], a["active"]) for a in listed] == [
        (1, "candidate", False),
        (2, "promoted", True),
    ]
    two = client.get("/v1/adapters/2", headers=api.auth("read")).json()
    assert two["parent_version"] == 1 and two["train_step"] == 20
    assert two["sha256"] == registry.sha256_file(tmp_path / "v2" / registry.ADAPTER_WEIGHTS)
    assert client.get("/v1/adapters/active", headers=api.auth("read")).json()["version"] == 2
    models = client.get("/v1/models", headers=api.auth("read")).json()["data"]
    assert [m["id"] for m in models] == ["lifelong", "lifelong@1", "lifelong@2", "base"]
    with engine.connect() as conn:
        (event,) = registry.history(conn)
    assert (event.action, event.from_version, event.to_version) == ("promote", None, 2)


def test_learner_status_and_control(client: TestClient, api: Any, engine: Engine) -> None:
    status = client.get("/v1/learner", headers=api.auth("read")).json()
    assert status["holder"] is None and not status["alive"] and not status["paused"]
    assert client.post("/v1/learner/pause", headers=api.auth("submit")).status_code == 403
    paused = client.post("/v1/learner/pause", headers=api.auth("admin"))
    assert paused.status_code == 202 and paused.json()["paused"] is True
    assert client.get("/v1/learner", headers=api.auth("read")).json()["paused"] is True
    assert client.post("/v1/learner/resume", headers=api.auth("admin")).status_code == 202
    with engine.connect() as conn:
        assert not control.is_paused(conn)


def test_completion_errors_are_4xx(client: TestClient, api: Any) -> None:
    unknown = client.post(
        "/v1/completions", json={"model": "gpt-9", "prompt": "x"}, headers=api.auth()
    )
    assert unknown.status_code == 404 and "gpt-9" in api.error(unknown)
    empty = client.post("/v1/completions", json={"prompt": []}, headers=api.auth())
    assert empty.status_code == 422
    bad_n = client.post("/v1/completions", json={"prompt": "x", "n": 0}, headers=api.auth())
    assert bad_n.status_code == 422
    read_only = client.post("/v1/completions", json={"prompt": "x"}, headers=api.auth("read"))
    assert read_only.status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_completions_from_the_base_model(make_client: Any, api: Any, micro_model_dir: Path) -> None:
    client = make_client(base_model=str(micro_model_dir), preload_model=True)
    body = {"model": "base", "prompt": ["copy ab =", "add 1 + 2 ="], "max_tokens": 5,
            "temperature": 0}  # fmt: skip
    for _ in range(200):  # the model loads on a background thread
        response = client.post("/v1/completions", json=body, headers=api.auth())
        if response.status_code != 503:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model"] == "base" and len(payload["choices"]) == 2
    assert all(c["finish_reason"] in ("stop", "length") for c in payload["choices"])
    again = client.post("/v1/completions", json=body, headers=api.auth()).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in payload["choices"]]
    missing = client.post(
        "/v1/completions", json={**body, "model": "lifelong@3"}, headers=api.auth()
    )
    assert missing.status_code == 404


def test_parse_model_name() -> None:
    assert parse_model_name("lifelong") == ("lifelong", None)
    assert parse_model_name("base") == ("base", None)
    assert parse_model_name("lifelong@12") == ("version", 12)
    for bad in ("lifelong@", "lifelong@x", "other", "lifelong@-1"):
        with pytest.raises(UnknownModel):
            parse_model_name(bad)


def test_out_of_range_input_is_4xx_not_500(client: TestClient, api: Any) -> None:
    read = api.auth("read")
    assert client.get("/v1/adapters/99999999999999999999", headers=read).status_code == 422
    huge_after = client.get("/v1/buckets/b/examples?after_id=99999999999999999999", headers=read)
    assert huge_after.status_code == 422
    assert client.get("/v1/buckets/a%00b", headers=read).status_code == 404
    for model in ("lifelong@²", "lifelong@99999999999999999999"):
        response = client.post("/v1/completions", json={"model": model, "prompt": "x"},
                               headers=api.auth())  # fmt: skip
        assert response.status_code == 404, (model, response.text)
    seed = client.post("/v1/completions", json={"prompt": "x", "seed": 2**70}, headers=api.auth())
    assert seed.status_code == 422
    nul = client.post(
        "/v1/tasks",
        json={"bucket": "b", "examples": [{"prompt": "a\u0000b", "target": "c"}]},
        headers=api.auth(),
    )
    assert nul.status_code == 422 and "NUL" in api.error(nul)
    assert api.count() == 0
