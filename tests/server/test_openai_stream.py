"""Streaming and log probabilities below the HTTP layer, and streams on the bounded queue.

``generate_choices`` runs on the micro model, whose greedy answer to ``add 1 2 =`` is a
run of 1s; the HTTP tests use the in-process app (the official client's view of the same
routes is tests/e2e/test_openai_client.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from learner.config import GenerationParams
from learner.model import generate as generation
from learner.model.generate import cut_at_stop, generate_choices
from learner.model.loading import load_base, prompt_ids
from server.process.settings import LimitSettings
from server.serving.openai.stream import EventStream, StreamFormat, StreamHooks, start_stream
from server.serving.queue import InferenceQueue

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
PROMPT = "add 1 2 ="


@pytest.fixture(scope="module")
def micro(micro_model_dir: Path) -> tuple[Any, Any]:
    model, tokenizer = load_base(micro_model_dir, torch.device("cpu"))
    return model.eval(), tokenizer


def _streamed(
    micro: tuple[Any, Any], prompts: list[str], params: GenerationParams, **kwargs: Any
) -> tuple[list[generation.Generated], list[str], int]:
    """The results, the text streamed per row, and the number of deltas."""
    deltas: list[tuple[int, str]] = []
    results = generate_choices(
        *micro, prompts, params, on_delta=lambda row, text: deltas.append((row, text)), **kwargs
    )
    texts = ["".join(t for r, t in deltas if r == row) for row in range(len(prompts))]
    return results, texts, len(deltas)


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop("abcdef", ["de", "bc"]) == ("a", True)
    assert cut_at_stop("abc", ["x", ""]) == ("abc", False)


@pytest.mark.parametrize("stop", [(), ("12",), ("111",), ("x1",)])
def test_streamed_text_is_the_answer(micro: tuple[Any, Any], stop: tuple[str, ...]) -> None:
    params = GenerationParams(max_new_tokens=8, stop=stop)
    results, texts, deltas = _streamed(micro, [PROMPT, "count aaa ="], params)
    assert results[0].text == ("" if stop == ("111",) else "1" * 8)
    assert results[1].text == texts[1] == ""  # EOS at once
    if stop == ("12",):  # every 1 may start "12": each waits a step, the last one the
        assert texts[0] == "1" * 7 and deltas == 7  # route sends with the finish
    else:
        assert texts[0] == results[0].text


def test_a_stop_string_ends_its_row_early(micro: tuple[Any, Any]) -> None:
    params = GenerationParams(max_new_tokens=20, stop=("111",))
    (result,) = generate_choices(*micro, [PROMPT], params, top_logprobs=2)
    assert (result.text, result.finish, result.tokens) == ("", "stop", 3)
    assert result.logprobs == ()  # no token lies within the (empty) text


def test_cancel_ends_decoding_at_the_next_step(micro: tuple[Any, Any]) -> None:
    cancel = threading.Event()
    (result,) = generate_choices(
        *micro,
        [PROMPT],
        GenerationParams(max_new_tokens=100),
        on_delta=lambda row, text: cancel.set(),
        cancel=cancel,
    )
    assert result.tokens == 1 and result.finish == "length"


def test_logprobs_are_the_model_distribution(micro: tuple[Any, Any]) -> None:
    model, tokenizer = micro
    (result,) = generate_choices(
        model, tokenizer, [PROMPT], GenerationParams(max_new_tokens=3), top_logprobs=5
    )
    assert result.logprobs is not None and len(result.logprobs) == 3
    ids = torch.tensor([prompt_ids(tokenizer, PROMPT)])
    with torch.no_grad():
        first = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)  # (V,)
    token = result.logprobs[0]
    assert token.token == "1"
    assert token.logprob == pytest.approx(float(first.max()), abs=1e-4)
    assert [v for _, v in token.top] == pytest.approx(first.topk(5).values.tolist(), abs=1e-4)


LIMITS = LimitSettings(max_queued_completions=1, max_other_body_bytes=4096)


@pytest.fixture
def serving(make_serving: Any, micro_model_dir: Path) -> TestClient:
    client: TestClient = make_serving(micro_model_dir, limits=LIMITS)
    return client


def _events(response: Any) -> list[Any]:
    """The JSON of every ``data:`` event, and "[DONE]"."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture
def blocked(serving: TestClient) -> Iterator[InferenceQueue]:
    """The app's inference queue with its one slot taken until the test ends."""
    queue: InferenceQueue = serving.app.state.lifelong.inference_queue  # type: ignore[attr-defined]
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    thread = threading.Thread(target=lambda: asyncio.run(queue.run(hold)), daemon=True)
    thread.start()
    assert started.wait(10)
    yield queue
    release.set()
    thread.join(10)


@SQLITE
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_stream_is_refused_with_429_when_the_queue_is_full(
    serving: TestClient, api: Any, blocked: InferenceQueue, path: str
) -> None:
    body: dict[str, Any] = {"model": "base", "max_tokens": 4, "stream": True}
    body.update(
        {"prompt": PROMPT}
        if "chat" not in path
        else {"messages": [{"role": "user", "content": PROMPT}]}
    )
    response = serving.post(path, json=body, headers=api.auth())
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
    assert "inference queue is full" in error["message"]


@SQLITE
def test_a_stream_takes_and_frees_its_queue_slot(serving: TestClient, api: Any) -> None:
    queue: InferenceQueue = serving.app.state.lifelong.inference_queue  # type: ignore[attr-defined]
    body = {"model": "base", "prompt": PROMPT, "max_tokens": 5, "temperature": 0, "stream": True}
    for _ in range(3):  # one slot: each stream must have given it back
        with serving.stream("POST", "/v1/completions", json=body, headers=api.auth()) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "11111"
    assert queue.pending == 0


@SQLITE
def test_an_error_mid_stream_is_an_error_event(
    serving: TestClient, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, on_delta: Any = None, **kwargs: Any) -> Any:
        on_delta(0, "1")
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(generation, "generate_choices", fail)
    body = {"model": "base", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    with serving.stream("POST", "/v1/chat/completions", json=body, headers=api.auth()) as response:
        assert response.status_code == 200
        events = _events(response)
    role, text, error = events
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"][0]["delta"] == {"content": "1"}
    assert error["error"]["type"] == "server_error"  # the details are in the server log
    assert "the device fell over" not in error["error"]["message"]


def test_a_client_that_leaves_stops_its_generation() -> None:
    """A send that fails (the client disconnected) cancels the generation at its next step
    and gives the queue slot back."""
    queue = InferenceQueue(max_pending=1)
    steps: list[int] = []

    def generate(hooks: StreamHooks) -> tuple[list[generation.Generated], str]:
        hooks.on_start("base")
        while not hooks.cancel.wait(0.01) and len(steps) < 1000:  # one "token" per step
            steps.append(len(steps))
            hooks.on_delta(0, "1")
        return [generation.Generated("1" * len(steps), "length", len(steps))], "base"

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            raise OSError("the client went away")

    async def receive() -> Any:
        await asyncio.sleep(3600)

    async def scenario() -> None:
        stream = await start_stream(queue, generate)
        response = EventStream(stream, StreamFormat(False, 1, [3], include_usage=False))
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST"}
        with pytest.raises(ClientDisconnect):
            await response(scope, receive, send)
        for _ in range(200):
            if queue.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert queue.pending == 0 and len(steps) < 100

    try:
        asyncio.run(scenario())
    finally:
        queue.shutdown()
