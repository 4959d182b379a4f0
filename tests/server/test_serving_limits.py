"""Every serving limit answers 4xx naming the limit, before any generation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.process.settings import LimitSettings
from server.serving.queue import InferenceQueue, QueueFull

# Limits are checked before any storage: one backend is enough.
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
LIMITS = LimitSettings(
    max_prompts=3,
    max_messages=4,
    max_request_tokens=300,
    max_other_body_bytes=4096,
    max_body_bytes=16_384,
)
COMPLETIONS = "/v1/completions"


@pytest.fixture
def serving(make_serving: Any, micro_model_dir: Path) -> TestClient:
    client: TestClient = make_serving(micro_model_dir, limits=LIMITS)
    return client


def _post(client: TestClient, api: Any, body: dict[str, Any], path: str = COMPLETIONS) -> Any:
    return client.post(path, json={"model": "base", "max_tokens": 2, **body}, headers=api.auth())


@SQLITE
def test_a_request_within_every_limit_is_served(serving: TestClient, api: Any) -> None:
    response = _post(serving, api, {"prompt": ["copy ab =", "copy cd ="], "stop": ["\n"]})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "too many prompts": ({"prompt": ["a"] * 4}, "4 prompts, at most 3 allowed"),
    "too many stop strings": ({"prompt": "a", "stop": list("abcde")}, "5 strings, at most 4"),
    "a long stop string": ({"prompt": "a", "stop": ["x" * 65]}, "at most 64 characters"),
    "prompt beyond the context": (
        {"prompt": "p" * 250, "max_tokens": 10},
        "+ max_tokens 10 = 261 exceeds the model's context of 256 tokens",
    ),
    "over the token budget": (
        {"prompt": ["p" * 100, "q", "r"], "max_tokens": 10},
        "3 prompt(s) x (101 tokens of the longest prompt + max_tokens 10) = 333 tokens "
        "exceeds the per-request budget of 300 tokens",
    ),
    "max_tokens beyond the schema": ({"prompt": "a", "max_tokens": 5000}, "max_tokens"),
    "n below 1": ({"prompt": "a", "n": 0}, "n"),
    "n over the token budget": (
        {"prompt": "p" * 100, "n": 3, "max_tokens": 10},
        "1 prompt(s) x n 3 x (101 tokens of the longest prompt + max_tokens 10) = 333 tokens "
        "exceeds the per-request budget of 300 tokens",
    ),
}


@SQLITE
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_limits_are_422_naming_the_limit(serving: TestClient, api: Any, case: str) -> None:
    body, expected = CASES[case]
    response = _post(serving, api, body)
    assert response.status_code == 422, response.text
    assert expected in api.error(response)


@SQLITE
def test_chat_message_limit(serving: TestClient, api: Any) -> None:
    messages = [{"role": "user", "content": "copy ab ="}] * 5
    response = _post(serving, api, {"messages": messages}, "/v1/chat/completions")
    assert response.status_code == 422
    assert "5 messages, at most 4 allowed" in api.error(response)
    ok = _post(serving, api, {"messages": messages[:4]}, "/v1/chat/completions")
    assert ok.status_code == 200, ok.text


@SQLITE
@pytest.mark.parametrize(
    "path, field",
    [(COMPLETIONS, "prompt"), ("/v1/chat/completions", "messages"), ("/v1/tasks", "examples")],
)
def test_lone_surrogates_are_422(serving: TestClient, api: Any, path: str, field: str) -> None:
    text = "copy \ud800 ="
    body: dict[str, Any] = {
        COMPLETIONS: {"model": "base", "prompt": text},
        "/v1/chat/completions": {"model": "base", "messages": [{"role": "user", "content": text}]},
        "/v1/tasks": {"bucket": "b", "examples": [{"prompt": text, "target": "x"}]},
    }[path]
    # json.dumps escapes the surrogate as \ud800, as a client's JSON encoder would.
    raw = json.dumps(body).encode("ascii")
    headers = {**api.auth(), "Content-Type": "application/json"}
    response = serving.post(path, content=raw, headers=headers)
    assert response.status_code == 422, response.text
    message = api.error(response)
    # Ingestion parses the raw JSON with pydantic, which refuses the text itself.
    assert field in message and ("lone surrogate (U+D800" in message or "unicode" in message)
    assert api.count() == 0


@SQLITE
def test_small_body_limit_for_every_route_but_tasks(serving: TestClient, api: Any) -> None:
    headers = {**api.auth(), "Content-Type": "application/json"}
    big = json.dumps({"model": "base", "prompt": "p" * 5000}).encode()
    response = serving.post(COMPLETIONS, content=big, headers=headers)
    assert response.status_code == 413
    assert "larger than 4096 bytes" in api.error(response)
    examples = [{"prompt": f"copy {i} =", "target": str(i)} for i in range(5)]
    tasks = json.dumps({"bucket": "b", "examples": examples, "grader": " " * 5000}).encode()
    assert len(tasks) > 4096
    accepted = serving.post("/v1/tasks", content=tasks, headers=headers)
    assert accepted.status_code != 413, accepted.text


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    """The bound holds; a waiting job whose client gives up is dropped, not run."""
    queue = InferenceQueue(max_pending=2)
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> None:
        first = asyncio.ensure_future(queue.run(release.wait))
        second = asyncio.ensure_future(queue.run(lambda: ran.append("second")))
        await asyncio.sleep(0.05)
        assert queue.pending == 2
        started = time.monotonic()
        with pytest.raises(QueueFull) as refused:
            await queue.run(lambda: "third")
        assert time.monotonic() - started < 0.1 and refused.value.retry_after >= 1
        second.cancel()  # its client disconnected before the job started
        await asyncio.sleep(0.05)
        assert queue.pending == 1
        release.set()
        assert await first is True
        for _ in range(100):
            if queue.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert queue.pending == 0
        assert await queue.run(lambda: "again") == "again"
        assert ran == []

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        queue.shutdown()


@SQLITE
@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", False), ("max_tokens", True), ("n", "2"), ("top_p", "0.5")],
)
def test_json_types_are_not_coerced(
    serving: TestClient, api: Any, field: str, value: object
) -> None:
    """schemathesis found ``"temperature": false`` served as 0.0: the schema says number."""
    response = _post(serving, api, {"prompt": "a", field: value})
    assert response.status_code == 422, response.text
    assert field in api.error(response)
