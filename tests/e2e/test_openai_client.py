"""The official ``openai`` client against a running ``lifelong serve``: every OpenAI feature.

One real server (uvicorn, SQLite, the micro builtin model, no learner) for the module, with
two adapter versions made the way the learner makes them: v1 a candidate, v2 promoted, so
``lifelong`` is served by ``lifelong@2`` while ``lifelong@1`` and ``base`` are asked for by
name. The micro model is barely trained; its greedy answer to ``add 1 2 =`` is a run of
digits, long enough to stream token by token. Decoding is greedy (temperature 0) unless a
test samples on purpose, so a streamed answer must equal the whole one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import openai
import pytest

from learner.model import registry
from learner.store.db import make_engine, write_transaction

PROMPT = "add 1 2 ="
CHAT = [{"role": "user", "content": PROMPT}]
GREEDY: dict[str, Any] = {"max_tokens": 6, "temperature": 0}
MODELS = ["lifelong", "lifelong@1", "base"]
SERVED = {"lifelong": "lifelong@2", "lifelong@1": "lifelong@1", "base": "base"}
AUTH_FAILURE_LIMIT = 3


def _write_lora(micro_model_dir: Path, dest: Path) -> None:
    """A real (tiny, freshly initialised) LoRA adapter for the micro model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from learner.model.loading import load_base

    base, _ = load_base(micro_model_dir, torch.device("cpu"))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(str(dest))


def _add_versions(database_url: str, data_dir: Path, lora: Path) -> None:
    """v1 (candidate) and v2 (promoted), files under data_dir as the learner writes them."""
    engine = make_engine(database_url)
    try:
        for parent in (None, 1):
            with write_transaction(engine) as conn:
                version = registry.reserve_version(conn, parent, "builtin:micro", 10)
            path = data_dir / registry.version_relpath(version)
            shutil.copytree(lora, path)
            digest = registry.sha256_file(path / registry.ADAPTER_WEIGHTS)
            with write_transaction(engine) as conn:
                registry.complete_version(conn, version, digest, {"version": version})
        with write_transaction(engine) as conn:
            registry.promote(conn, 2, "test", "serve v2 as lifelong")
    finally:
        engine.dispose()


# The running server (tests/e2e/conftest.py's LiveServer).
LiveServer = Any


def _e2e_conftest(config: pytest.Config) -> ModuleType:
    """tests/e2e/conftest.py as pytest loaded it: ``from conftest import`` may give another
    directory's conftest when several test directories are collected together."""
    module = config.pluginmanager.get_plugin(str(Path(__file__).with_name("conftest.py")))
    assert isinstance(module, ModuleType)
    return module


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    base_model: str,
    micro_model_dir: Path,
) -> Iterator[LiveServer]:
    launch_server = _e2e_conftest(request.config).launch_server
    work = tmp_path_factory.mktemp("openai")
    url = f"sqlite:///{work / 'openai.db'}"
    env = {
        "LIFELONG_BASE_MODEL": base_model,
        "LIFELONG_ALIGNMENT_SUITE": "false",
        "LIFELONG_AUTH_FAILURE_LIMIT": str(AUTH_FAILURE_LIMIT),
    }
    live = launch_server(work / "data", url, env=env)
    try:
        _write_lora(micro_model_dir, work / "lora")
        _add_versions(url, live.data_dir, work / "lora")
        yield live
    finally:
        live.stop()


def _client(server: LiveServer, key: str | None = None) -> openai.OpenAI:
    # No retries: a 429 or 409 must reach the test, not be retried away.
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=key or server.keys["submit"],
        max_retries=0,
        timeout=60,
    )


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    """A client once ``lifelong`` is served by v2 (the inference engine follows the
    registry within a poll)."""
    oai = _client(server)

    def served() -> str:
        try:
            return oai.completions.create(model="lifelong", prompt=PROMPT, max_tokens=1).model
        except openai.APIStatusError as exc:  # 503 while the model loads
            return f"{exc.status_code}"

    deadline = time.monotonic() + 60
    while served() != "lifelong@2":
        assert time.monotonic() < deadline, f"lifelong is still served by {served()}"
        time.sleep(0.2)
    return oai


def test_models_are_listed_in_the_openai_shape(client: openai.OpenAI) -> None:
    listed = client.models.list()
    assert listed.object == "list"
    assert [m.id for m in listed.data] == ["lifelong", "lifelong@1", "lifelong@2", "base"]
    for entry in listed.data:
        assert entry.object == "model" and entry.owned_by == "lifelong" and entry.created > 0
    assert client.models.retrieve("lifelong@1").id == "lifelong@1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("lifelong@99")


@pytest.mark.parametrize("model", MODELS)
def test_completions_for_every_model(client: openai.OpenAI, model: str) -> None:
    answer = client.completions.create(model=model, prompt=PROMPT, **GREEDY)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert answer.model == SERVED[model] and answer.created > 0
    (choice,) = answer.choices
    assert choice.index == 0 and choice.text and choice.finish_reason in ("stop", "length")
    assert choice.logprobs is None
    usage = answer.usage
    assert usage is not None
    assert usage.prompt_tokens == len(PROMPT) + 1  # one token per character, and BOS
    assert 0 < usage.completion_tokens <= GREEDY["max_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_chat_completions_for_every_model(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=CHAT, **GREEDY)  # type: ignore[arg-type]
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == SERVED[model]
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    # Without a chat template the conversation is its contents: the completion's answer.
    whole = client.completions.create(model=model, prompt=PROMPT, **GREEDY)
    assert choice.message.content == whole.choices[0].text
    assert answer.usage is not None and answer.usage.total_tokens > answer.usage.prompt_tokens


# "12" never completes in the model's answer (a run of 1s), but each 1 could start it, so
# the stream holds it back a step; "111" ends the answer before its first character.
STOPS = {"no stop": None, "stop held back": ["12"], "stop at once": ["111"]}


@pytest.mark.parametrize("stop", STOPS.values(), ids=list(STOPS))
def test_streamed_completion_is_the_whole_answer(client: openai.OpenAI, stop: Any) -> None:
    whole = client.completions.create(model="lifelong", prompt=PROMPT, stop=stop, **GREEDY)
    chunks = list(
        client.completions.create(
            model="lifelong",
            prompt=PROMPT,
            stop=stop,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert all(c.object == "text_completion" and c.model == "lifelong@2" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *text_chunks, usage_chunk = chunks
    text = whole.choices[0].text
    assert "".join(c.choices[0].text for c in text_chunks) == text
    assert len(text_chunks) > len(text) // 2, "the text came in one piece, not streamed"
    finishes = [c.choices[0].finish_reason for c in text_chunks]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage


def test_streamed_chat_is_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="lifelong@1", messages=CHAT, **GREEDY)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="lifelong@1",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        **GREEDY,
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "lifelong@1" for c in chunks)
    first, *rest = chunks
    assert first.choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert len([c for c in rest if c.choices[0].delta.content]) > 1
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_streamed_chat_with_two_choices(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="base",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        n=2,
        **GREEDY,
    )
    texts, finishes = ["", ""], [None, None]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = finishes[choice.index] or choice.finish_reason
    whole = client.chat.completions.create(model="base", messages=CHAT, **GREEDY)  # type: ignore[arg-type]
    assert texts == [whole.choices[0].message.content] * 2
    assert finishes == [whole.choices[0].finish_reason] * 2


def test_n_choices(client: openai.OpenAI) -> None:
    greedy = client.completions.create(model="base", prompt=[PROMPT, "add 2 2 ="], n=2, **GREEDY)
    assert [c.index for c in greedy.choices] == [0, 1, 2, 3]
    texts = [c.text for c in greedy.choices]  # by prompt, then by n; greedy: equal pairs
    assert texts[0] == texts[1] and texts[2] == texts[3]
    assert greedy.usage is not None
    assert greedy.usage.prompt_tokens == 2 * (len(PROMPT) + 1)  # each prompt once
    sampled = client.chat.completions.create(
        model="lifelong",
        messages=CHAT,  # type: ignore[arg-type]
        n=3,
        max_tokens=6,
        temperature=1.0,
        seed=7,
    )
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    again = client.chat.completions.create(
        model="lifelong",
        messages=CHAT,  # type: ignore[arg-type]
        n=3,
        max_tokens=6,
        temperature=1.0,
        seed=7,
    )
    assert [c.message.content for c in again.choices] == [
        c.message.content for c in sampled.choices
    ]


def test_completion_logprobs(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="lifelong", prompt=PROMPT, logprobs=3, **GREEDY)
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert logprobs.top_logprobs is not None and logprobs.text_offset is not None
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == list(range(len(choice.text)))  # one character per token
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    for token, value, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert value is not None and value <= 0
        assert len(top) == 3 and all(v <= 0 for v in top.values())
        assert top[token] == value == max(top.values())  # greedy: the likeliest token
    streamed = client.completions.create(
        model="lifelong", prompt=PROMPT, logprobs=3, stream=True, **GREEDY
    )
    tokens = [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == logprobs.tokens


def test_chat_logprobs(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="base",
        messages=CHAT,  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=4,
        **GREEDY,
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert token.logprob <= 0 and token.bytes == list(token.token.encode())
        assert len(token.top_logprobs) == 4
        values = [t.logprob for t in token.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert token.top_logprobs[0].token == token.token  # greedy: the likeliest token
    plain = client.chat.completions.create(
        model="base",
        messages=CHAT,  # type: ignore[arg-type]
        logprobs=True,
        **GREEDY,
    )
    assert plain.choices[0].logprobs is not None and plain.choices[0].logprobs.content
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)
    streamed = client.chat.completions.create(
        model="base",
        messages=CHAT,  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=4,
        stream=True,
        **GREEDY,
    )
    chunks = [c.choices[0].logprobs.content or [] for c in streamed if c.choices[0].logprobs]
    assert [t.token for c in chunks for t in c] == [t.token for t in content]


def test_bad_keys_are_authentication_errors_then_rate_limited(server: LiveServer) -> None:
    # Each a new made-up key: a known bad key is answered 401 from the cache, unthrottled.
    for attempt in range(AUTH_FAILURE_LIMIT):
        with pytest.raises(openai.AuthenticationError) as denied:
            _client(server, key=f"made-up-{attempt}").completions.create(
                model="base", prompt=PROMPT
            )
    error = denied.value
    assert error.status_code == 401 and "invalid or revoked API key" in error.message
    assert isinstance(error.body, dict) and error.body["message"] == "invalid or revoked API key"
    assert error.type == "authentication_error" and error.code == "invalid_api_key"
    with pytest.raises(openai.RateLimitError) as throttled:
        _client(server, key="made-up-once-more").models.list()
    assert "too many failed authentications" in throttled.value.message
    assert throttled.value.type == "rate_limit_error"
    assert int(throttled.value.response.headers["Retry-After"]) >= 1
    reader = _client(server, key=server.keys["read"])
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        reader.completions.create(model="base", prompt=PROMPT)
    assert forbidden.value.type == "permission_error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_unknown_models_are_not_found(client: openai.OpenAI, stream: bool) -> None:
    for model in ("gpt-4", "lifelong@99"):
        with pytest.raises(openai.NotFoundError) as missing:
            client.completions.create(model=model, prompt=PROMPT, stream=stream)
        error = missing.value
        assert isinstance(error.body, dict) and error.body["message"] in error.message
        assert error.type == "not_found_error" and error.code == "model_not_found"
        assert error.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=CHAT, stream=stream)  # type: ignore[arg-type]


INVALID: dict[str, tuple[str, dict[str, Any], str]] = {
    "temperature": ("completions", {"temperature": 3}, "temperature"),
    "n": ("completions", {"n": 0}, "n"),
    "completion logprobs over 5": ("completions", {"logprobs": 6}, "logprobs"),
    "chat top_logprobs over 20": ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    "top_logprobs alone": ("chat", {"top_logprobs": 2}, "top_logprobs needs logprobs"),
    "unknown field": ("completions", {"extra_body": {"best_of": 2}}, "best_of"),
    "beyond the context": ("completions", {"max_tokens": 4000}, "exceeds the model's context"),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_requests_are_unprocessable(client: openai.OpenAI, case: str) -> None:
    endpoint, params, expected = INVALID[case]
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        if endpoint == "chat":
            client.chat.completions.create(model="base", messages=CHAT, **params)  # type: ignore[arg-type]
        else:
            client.completions.create(model="base", prompt=PROMPT, **params)
    error = invalid.value
    assert error.status_code == 422 and error.type == "invalid_request_error"
    assert isinstance(error.body, dict) and expected in error.body["message"]
    assert expected in error.message
