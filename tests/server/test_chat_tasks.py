"""Chat-format tasks through the API: stored as ``/v1/chat/completions`` renders them, one
format per bucket, and clear 4xx errors that store nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chat_model import without_chat_template
from fastapi.testclient import TestClient

from learner.model.loading import prompt_ids
from server.process.settings import LimitSettings

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


@pytest.fixture
def serving(make_serving: Any, chat_model_dir: Path) -> TestClient:
    client: TestClient = make_serving(chat_model_dir, limits=LimitSettings())
    return client


def test_chat_examples_are_stored_as_the_chat_route_renders_them(
    serving: TestClient, api: Any
) -> None:
    examples = [chat("sort cba =", "abc", system="Sort."), chat("sort fed =", "def")]
    body = {"bucket": "chatty", "examples": examples}
    first = serving.post("/v1/tasks", json=body, headers=api.auth())
    assert first.status_code == 202, first.text
    assert first.json() == {"bucket": "chatty", "accepted": 2, "duplicates": 0}
    again = serving.post("/v1/tasks", json=body, headers=api.auth())
    assert again.json()["duplicates"] == 2  # the hash covers the conversation
    other_system = chat("sort cba =", "abc", system="Sort letters.")
    assert (
        serving.post(
            "/v1/tasks", json={"bucket": "chatty", "examples": [other_system]}, headers=api.auth()
        ).json()["accepted"]
        == 1
    )

    bucket = serving.get("/v1/buckets/chatty", headers=api.auth("read")).json()
    assert bucket["format"] == "chat" and bucket["kind"] == "task"
    page = serving.get("/v1/buckets/chatty/examples", headers=api.auth("read")).json()
    stored = {
        e["messages"][-2]["content"] + e["messages"][0]["content"]: e for e in page["examples"]
    }
    first_example = stored["sort cba =Sort."]
    assert first_example["messages"] == examples[0]["messages"]
    assert first_example["target"] == "abc"

    # The chat route sends the model exactly the stored prompt's tokens.
    tokenizer = serving.app.state.lifelong.inference.tokenizer  # type: ignore[attr-defined]
    response = serving.post(
        "/v1/chat/completions",
        json={"model": "base", "messages": examples[0]["messages"][:-1], "max_tokens": 1},
        headers=api.auth(),
    )
    assert response.status_code == 200, response.text
    ids = prompt_ids(tokenizer, first_example["prompt"])
    assert response.json()["usage"]["prompt_tokens"] == len(ids)
    assert ids.count(tokenizer.bos_token_id) == 1


@SQLITE
def test_one_format_per_bucket_and_bad_chat_examples_store_nothing(
    serving: TestClient, api: Any, subtests: pytest.Subtests
) -> None:
    completion = {"prompt": "sort cba =", "target": "abc"}
    for bucket, examples in (("plain", [completion]), ("chatty", [chat("q", "a")])):
        ok = serving.post("/v1/tasks", json={"bucket": bucket, "examples": examples},
                          headers=api.auth())  # fmt: skip
        assert ok.status_code == 202, ok.text
    user_last = {"messages": [{"role": "user", "content": "q"}]}
    cases: dict[str, tuple[dict[str, Any], int, str]] = {
        "chat into a completion bucket": (
            {"bucket": "plain", "examples": [chat("x", "y")]}, 409,
            "bucket 'plain' already exists with format 'completion', not 'chat'",
        ),
        "completion into a chat bucket": (
            {"bucket": "chatty", "examples": [completion]}, 409,
            "bucket 'chatty' already exists with format 'chat', not 'completion'",
        ),
        "a mixed batch": (
            {"bucket": "new", "examples": [completion, chat("x", "y")]}, 422,
            "examples mix chat",
        ),
        "both shapes in one example": (
            {"bucket": "new", "examples": [{**completion, **chat("x", "y")}]}, 422,
            "examples[0]: give either messages or prompt and target",
        ),
        "the last turn is the user's": (
            {"bucket": "new", "examples": [chat("x", "y"), {"messages": [
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}]}]},
            422, "examples[1].messages: the last turn is the target and must be the assistant's",
        ),
        "one turn only": (
            {"bucket": "new", "examples": [user_last]}, 422, "examples[0].messages",
        ),
        "an unknown role": (
            {"bucket": "new", "examples": [{"messages": [{"role": "tool", "content": "q"},
                                                         {"role": "assistant", "content": "a"}]}]},
            422, "examples[0].messages[0].role",
        ),
        "format says chat, examples are completions": (
            {"bucket": "new", "format": "chat", "examples": [completion]}, 422,
            "format 'chat' takes {messages} examples",
        ),
    }  # fmt: skip
    for case, (body, status, message) in cases.items():
        with subtests.test(case):
            before = api.count()
            response = serving.post("/v1/tasks", json=body, headers=api.auth())
            assert response.status_code == status, response.text
            assert message in api.error(response)
            assert api.count() == before
    names = [b["name"] for b in serving.get("/v1/buckets", headers=api.auth("read")).json()]
    assert names == ["plain", "chatty"]


@SQLITE
def test_a_model_without_a_chat_template_refuses_chat_buckets(
    make_serving: Any, api: Any, chat_model_dir: Path, tmp_path: Path
) -> None:
    plain = make_serving(without_chat_template(chat_model_dir, tmp_path / "plain"))
    response = plain.post(
        "/v1/tasks", json={"bucket": "chatty", "examples": [chat("q", "a")]}, headers=api.auth()
    )
    assert response.status_code == 422, response.text
    assert "examples[0].messages: the model's tokenizer has no chat template" in api.error(response)
    assert api.count() == 0
    ok = plain.post("/v1/tasks", json={"bucket": "b", "examples": api.examples(2)},
                    headers=api.auth())  # fmt: skip
    assert ok.status_code == 202  # completion buckets need no template


@SQLITE
def test_a_chat_example_over_the_limit_is_named_as_such(
    make_serving: Any, api: Any, chat_model_dir: Path
) -> None:
    client = make_serving(chat_model_dir)  # TEST_LIMITS: 20-character prompts
    response = client.post(
        "/v1/tasks", json={"bucket": "c", "examples": [chat("q", "a")]}, headers=api.auth()
    )
    assert response.status_code == 422
    assert "examples[0].messages (rendered, before the last turn) has" in api.error(response)
