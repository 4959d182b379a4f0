"""Streamed completions: server-sent events, exactly as OpenAI's API streams them.

The generation runs alone on the bounded inference queue (it is never merged with other
requests: its text goes out while it decodes), so the queue's bound and its 429 hold for
streams too. The inference thread posts what happens (the model chosen, each row's new
text) onto an asyncio queue with ``call_soon_threadsafe``; the response reads from it, so
the event loop never waits on generation. The answer starts only once the generation has
started: a full queue, an unknown model or a model still loading are HTTP errors, not
broken streams. A client that disconnects sets ``cancel``, which ends the decoding at its
next step (or drops the job if it had not started), freeing the inference thread.

Events are ``data: <chunk>\\n\\n`` lines, then ``data: [DONE]\\n\\n``. Chunks have object
``text_completion`` (choices[].text) or ``chat.completion.chunk`` (choices[].delta, with
the role in a first chunk per choice). Each choice's last chunk carries its
finish_reason, the text not yet sent, and, if asked for, the log probabilities of all its
tokens (concatenated over the chunks, a choice's log probabilities are complete and in
order). With ``stream_options.include_usage`` a chunk with no choices and the usage comes
before ``[DONE]``. An error after the answer started is sent as ``data: {"error": ...}``,
which OpenAI's clients raise as an APIError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from server.api.errors import error_body
from server.serving.openai.format import (
    chat_logprobs,
    completion_id,
    completion_logprobs,
    now,
    serving_error,
    usage,
)
from server.serving.queue import InferenceQueue

if TYPE_CHECKING:
    from learner.model.generate import Generated

log = logging.getLogger(__name__)
MEDIA_TYPE = "text/event-stream"
DONE = "data: [DONE]\n\n"


@dataclass(frozen=True)
class StreamHooks:
    """What the generation is given: where to report its start and each row's new text,
    and the event that asks it to stop."""

    on_start: Callable[[str], None]
    on_delta: Callable[[int, str], None]
    cancel: threading.Event


Generate = Callable[[StreamHooks], tuple[list["Generated"], str]]


@dataclass(frozen=True)
class _Started:
    served: str


@dataclass(frozen=True)
class _Delta:
    row: int
    text: str


@dataclass(frozen=True)
class _Finished:
    future: asyncio.Future[tuple[list[Generated], str]]


_Event = _Started | _Delta | _Finished


@dataclass
class OpenStream:
    """A generation that has started: its served model and the events still to come."""

    served: str
    events: asyncio.Queue[_Event]
    future: asyncio.Future[tuple[list[Generated], str]]
    cancel: threading.Event

    def close(self) -> None:
        """Stop the generation if it still runs (the client left, or the answer ended)."""
        self.cancel.set()
        if not self.future.done():
            self.future.cancel()


async def start_stream(queue: InferenceQueue, generate: Generate) -> OpenStream:
    """Queue ``generate`` (:class:`~server.serving.queue.QueueFull` at once when full)
    and wait until it has chosen its model; its error, if it fails first, is raised."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[_Event] = asyncio.Queue()
    cancel = threading.Event()

    def post(event: _Event) -> None:  # on the inference thread
        with suppress(RuntimeError):  # the event loop is closed: nobody listens
            loop.call_soon_threadsafe(events.put_nowait, event)

    hooks = StreamHooks(
        on_start=lambda served: post(_Started(served)),
        on_delta=lambda row, text: post(_Delta(row, text)),
        cancel=cancel,
    )
    future = queue.start(lambda: generate(hooks))
    # Resolved through call_soon_threadsafe after every event the job posted: last in line.
    future.add_done_callback(lambda f: events.put_nowait(_Finished(f)))
    try:
        first = await events.get()
        if isinstance(first, _Finished):
            first.future.result()  # the job's error (it posts _Started before anything else)
            raise RuntimeError("the generation ended before it started")
    except BaseException:
        cancel.set()
        future.cancel()
        raise
    assert isinstance(first, _Started)
    return OpenStream(first.served, events, future, cancel)


@dataclass
class StreamFormat:
    """How one kind of chunk is written: completions (``chat`` False) or chat."""

    chat: bool
    choices: int
    prompt_tokens: list[int]
    include_usage: bool
    id: str = field(init=False)
    created: int = field(default_factory=now)

    def __post_init__(self) -> None:
        self.id = completion_id(self.chat)

    def chunk(self, served: str, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": served,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def opening(self, served: str) -> list[str]:
        """Chat: a first chunk per choice with the role, as OpenAI sends."""
        if not self.chat:
            return []
        delta = {"role": "assistant", "content": ""}
        return [self.chunk(served, [self._choice(i, delta)]) for i in range(self.choices)]

    def delta(self, served: str, row: int, text: str) -> str:
        return self.chunk(served, [self._choice(row, {"content": text} if self.chat else text)])

    def last(self, served: str, row: int, rest: str, result: Generated) -> str:
        if self.chat:
            logprobs = chat_logprobs(result.logprobs)
            content = {"content": rest} if rest else {}
        else:
            logprobs = completion_logprobs(result.logprobs)  # type: ignore[assignment]
            content = rest  # type: ignore[assignment]
        dumped = logprobs.model_dump() if logprobs is not None else None
        return self.chunk(served, [self._choice(row, content, result.finish, dumped)])

    def usage(self, served: str, results: list[Generated]) -> str:
        return self.chunk(served, [], usage=usage(self.prompt_tokens, results).model_dump())

    def _choice(
        self,
        row: int,
        content: dict[str, str] | str,
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        key = "delta" if self.chat else "text"
        return {"index": row, key: content, "logprobs": logprobs, "finish_reason": finish}


class EventStream(StreamingResponse):
    """The events of one answer; the generation is stopped however the response ends.

    With ASGI 2.4 servers Starlette notices a disconnect only when a send fails, leaving the
    event generator unfinished, so the stop is made here, not only in the generator."""

    def __init__(self, stream: OpenStream, fmt: StreamFormat) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(_events(stream, fmt), media_type=MEDIA_TYPE, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


async def _events(stream: OpenStream, fmt: StreamFormat) -> AsyncIterator[str]:
    """The events of one answer; the generation is stopped however the answer ends."""
    served = stream.served
    sent = [""] * fmt.choices  # text streamed per choice
    try:
        for chunk in fmt.opening(served):
            yield chunk
        while not isinstance(event := await stream.events.get(), _Finished):
            if isinstance(event, _Delta) and event.text:
                sent[event.row] += event.text
                yield fmt.delta(served, event.row, event.text)
        try:
            results, _ = event.future.result()
        except Exception as exc:
            yield _error_event(exc)
            return
        for row, result in enumerate(results):
            if not result.text.startswith(sent[row]):  # a tokenizer that rewrote its past
                log.warning("streamed text of choice %d is not a prefix of its answer", row)
            yield fmt.last(served, row, result.text[len(sent[row]) :], result)
        if fmt.include_usage:
            yield fmt.usage(served, results)
        yield DONE
    finally:
        stream.close()


def _error_event(exc: Exception) -> str:
    error = serving_error(exc)
    if error is None:
        log.exception("streamed generation failed", exc_info=exc)
        body = error_body(500, "internal error; the generation failed")
    else:
        body = error_body(error.status_code, str(error.detail), param=error.param, code=error.code)
    return f"data: {json.dumps(body)}\n\n"
