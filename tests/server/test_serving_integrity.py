"""Only whole, verified versions are served; rejected ones only to admins.

The HTTP tests of versions that cannot be served need no model: a named version is checked
before the base model is loaded. The others load the ``builtin:micro`` model and a real,
tiny LoRA adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from learner.config import GenerationParams
from learner.model import registry
from learner.store.db import write_transaction
from learner.store.models import AdapterVersion
from server.serving.engine import InferenceEngine

PARAMS = GenerationParams(max_new_tokens=3)
BODY = {"prompt": "copy ab =", "max_tokens": 3, "temperature": 0}
CHAT = {"messages": [{"role": "user", "content": "copy ab"}], "max_tokens": 3}
REJECT = {"verdict": "reject", "summary": "forgot copy-l1"}


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def _complete(client: TestClient, api: Any, model: str, scope: str = "submit") -> Any:
    """A completion request, retried while the base model is still loading (503)."""
    for _ in range(300):
        response = client.post(
            "/v1/completions", json={**BODY, "model": model}, headers=api.auth(scope)
        )
        if response.status_code != 503:
            return response
        time.sleep(0.1)
    raise AssertionError(f"the model did not load: {response.text}")


@pytest.fixture
def serving(make_client: Any, micro_model_dir: Path) -> Callable[[], TestClient]:
    """A client serving the micro model (started when called, after the test's setup)."""
    return lambda: make_client(base_model=str(micro_model_dir), preload_model=True)


@pytest.fixture
def watching(engine: Engine, data_dir: Path, micro_model_dir: Path) -> Iterator[InferenceEngine]:
    """An inference engine (no HTTP) polling the registry quickly; start it with a request."""
    inference = InferenceEngine(
        engine, lambda: micro_model_dir, device="cpu", poll_seconds=0.05, data_dir=data_dir
    )
    yield inference
    inference.stop()


def _start(inference: InferenceEngine) -> None:
    inference.start_once()
    _wait(lambda: inference.ready, 60)


def test_models_lists_only_servable_versions(client: TestClient, api: Any, adapters: Any) -> None:
    candidate = adapters.add()
    rejected = adapters.add(status="rejected", gate_report=REJECT)
    pending = adapters.add(status="pending")
    retired = adapters.add(status="retired")
    promoted = adapters.add()
    adapters.promote(promoted)
    ids = [m["id"] for m in client.get("/v1/models", headers=api.auth("read")).json()["data"]]
    assert ids == ["lifelong", f"lifelong@{candidate}", f"lifelong@{promoted}", "base"]
    assert not {f"lifelong@{v}" for v in (rejected, pending, retired)} & set(ids)


def test_unservable_versions_are_refused_before_loading(
    make_client: Any, micro_model_dir: Path, api: Any, adapters: Any
) -> None:
    client = make_client(base_model=str(micro_model_dir))  # no preload: nothing may load
    rejected = adapters.add(status="rejected", gate_report=REJECT)
    corrupt, missing = adapters.add(), adapters.add()
    pending, retired = adapters.add(status="pending"), adapters.add(status="retired")
    adapters.corrupt(corrupt)
    adapters.weights(missing).unlink()
    expected = {
        f"lifelong@{rejected}": (404, "rejected by the gate; only admin keys may query it"),
        f"lifelong@{corrupt}": (409, "failed its integrity check"),
        f"lifelong@{missing}": (409, "has no weights file"),
        f"lifelong@{pending}": (409, "is pending"),
        f"lifelong@{retired}": (409, "is retired"),
        "lifelong@77": (404, "does not exist"),
    }
    for model, (code, fragment) in expected.items():
        for path, body in (
            ("/v1/completions", {**BODY, "model": model}),
            ("/v1/chat/completions", {**CHAT, "model": model}),
        ):
            response = client.post(path, json=body, headers=api.auth())
            assert response.status_code == code, (model, path, response.text)
            assert fragment in api.error(response)
    # An admin key may query the rejected version, but not a corrupt one.
    corrupt_for_admin = client.post(
        "/v1/completions", json={**BODY, "model": f"lifelong@{corrupt}"}, headers=api.auth("admin")
    )
    assert corrupt_for_admin.status_code == 409


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_rejected_versions_answer_only_to_admin_keys(
    serving: Callable[[], TestClient], api: Any, adapters: Any
) -> None:
    rejected = adapters.add(status="rejected", gate_report=REJECT, real=True)
    client = serving()
    admin = _complete(client, api, f"lifelong@{rejected}", scope="admin")
    assert admin.status_code == 200, admin.text
    assert admin.json()["model"] == f"lifelong@{rejected}"
    # Loaded now, but still refused to other keys.
    other = _complete(client, api, f"lifelong@{rejected}")
    assert other.status_code == 404 and "only admin keys" in api.error(other)
    # Corrupted after it was loaded: no longer served (not even to an admin), and no 500.
    adapters.corrupt(rejected)
    corrupt = _complete(client, api, f"lifelong@{rejected}", scope="admin")
    assert corrupt.status_code == 409 and "integrity check" in api.error(corrupt)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_corrupt_active_version_with_nothing_served_before_is_409(
    serving: Callable[[], TestClient], api: Any, adapters: Any
) -> None:
    version = adapters.add(real=True)
    adapters.promote(version)
    adapters.corrupt(version)
    client = serving()
    response = _complete(client, api, "lifelong")
    assert response.status_code == 409, response.text
    assert f"adapter version {version} failed its integrity check" in api.error(response)
    assert _complete(client, api, "base").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_watcher_keeps_serving_when_the_new_version_is_broken(
    watching: InferenceEngine, adapters: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    good = adapters.add(real=True)
    adapters.promote(good)
    _start(watching)
    assert watching.active == good  # followed before the first request was accepted
    broken = adapters.add(parent=good, real=True)
    adapters.corrupt(broken)
    with caplog.at_level(logging.WARNING, logger="server.serving.engine"):
        adapters.promote(broken)
        _wait(lambda: watching.unavailable is not None, 2)
        time.sleep(0.5)  # about ten more polls
    _, served = watching.complete("lifelong", ["copy ab ="], PARAMS)
    assert served == f"lifelong@{good}" and watching.active == good
    message = watching.unavailable or ""
    assert f"adapter version {broken} failed its integrity check" in message
    assert f"still serving lifelong@{good}" in message
    warnings = [r for r in caplog.records if f"adapter version {broken}" in r.getMessage()]
    assert len(warnings) == 1  # said once, not at every poll
    with write_transaction(engine) as conn:
        registry.rollback(conn, good, "test", "the new one is broken")
    _wait(lambda: watching.unavailable is None, 2)
    assert watching.active == good


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_relative_and_absolute_version_paths_are_served(
    watching: InferenceEngine, adapters: Any, engine: Engine, data_dir: Path
) -> None:
    relative = adapters.add(real=True)
    absolute = adapters.add(real=True)
    with write_transaction(engine) as conn:  # rows written before paths became relative
        conn.execute(
            update(AdapterVersion)
            .where(AdapterVersion.version == absolute)
            .values(path=str(data_dir / registry.version_relpath(absolute)))
        )
    _start(watching)
    for version in (relative, absolute):
        _, served = watching.complete(f"lifelong@{version}", ["copy ab ="], PARAMS)
        assert served == f"lifelong@{version}"
