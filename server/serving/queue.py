"""A bounded queue in front of inference, on a worker thread of its own, merging requests.

Generation is serialized (one model, one lock) and slow, so completions must neither hold
the server's shared thread pool (which health checks, ingestion and reads use) nor queue
without bound. Jobs run on one dedicated thread; at most ``max_pending`` jobs wait or run
at a time, and a request beyond that is refused at once with a Retry-After estimated from
recent job durations.

Waiting jobs that share a merge key (the same model and decoding settings) run as one
``generate`` call: prompts decode together, left-padded, and on the builtin tiny model 8
requests of 4 prompts took 0.147 s merged against 0.490 s one after another
(bench/results/batching.md). A merged batch keeps within the per-request token budget
(prompts x (longest prompt + max_tokens), what the padded batch costs), so merging never
makes a batch bigger than one request may be.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a merged job (a prompt)
O = TypeVar("O")  # noqa: E741 - its output


class QueueFull(RuntimeError):
    """Too many completions are pending; ``retry_after`` says when to try again."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(
            f"the inference queue is full ({pending} completions pending); retry in {retry_after} s"
        )
        self.retry_after = retry_after


@dataclass(eq=False)
class _Job:
    """One request's work. ``key`` None: ``run()`` alone; otherwise ``run(items)`` for the
    items of every merged job, one output per item, in order."""

    run: Callable[..., Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    key: Hashable | None = None
    items: Sequence[Any] = ()
    width: int = 0  # tokens per item once padded: longest prompt + max_tokens
    state: str = field(default="waiting")  # waiting -> running -> done, or dropped


class InferenceQueue:
    """Runs blocking inference jobs one at a time (merging compatible ones), refusing jobs
    beyond ``max_pending``."""

    def __init__(self, max_pending: int, token_budget: int = 16_384) -> None:
        self.max_pending = max_pending
        self.token_budget = token_budget
        self._waiting: deque[_Job] = deque()
        self._pending = 0
        self._closed = False
        self._cond = threading.Condition()
        self._mean_seconds = 1.0  # running mean of call durations, for Retry-After
        self.calls = 0  # generate calls made (a merged batch counts once)
        self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting or running now (the queue depth)."""
        return self._pending

    def refuse_if_full(self) -> None:
        """Raise :class:`QueueFull` now if no slot is free (a cheap early check, so that an
        overflowing request costs no tokenizing; submitting checks again atomically)."""
        if self._pending >= self.max_pending:
            raise QueueFull(self._pending, self.retry_after())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, drained at the mean rate."""
        return max(1, math.ceil(self._pending * self._mean_seconds))

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` alone on the inference thread; :class:`QueueFull` at once if full.

        A client that disconnects before its job started drops the job (and its slot); a
        running job keeps its slot until it finishes, so the bound counts every job the
        thread still has.
        """
        result: T = await self._submit(run=job)
        return result

    async def run_merged(
        self, key: Hashable, items: Sequence[I], width: int, run: Callable[[list[I]], list[O]]
    ) -> list[O]:
        """Run ``run(items)``, possibly as one call with other waiting jobs of equal ``key``
        (whose ``run`` must then do the same thing); returns this job's outputs."""
        outputs: list[O] = await self._submit(run=run, key=key, items=list(items), width=width)
        return outputs

    def start(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``job`` to run alone and return its future at once (:class:`QueueFull` if
        no slot is free), for a caller that does other work while the job runs (streaming
        its output). Cancelling the future drops the job if it has not started."""
        return self._enqueue(run=job)

    async def _submit(self, **job: Any) -> Any:
        return await self._enqueue(**job)

    def _enqueue(self, **job: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        entry = _Job(future=loop.create_future(), loop=loop, **job)
        with self._cond:
            if self._closed:
                raise RuntimeError("the inference queue is shut down")
            if self._pending >= self.max_pending:
                raise QueueFull(self._pending, self.retry_after())
            self._pending += 1
            self._waiting.append(entry)
            self._cond.notify()
        entry.future.add_done_callback(lambda f: self._drop(entry) if f.cancelled() else None)
        return entry.future

    def _drop(self, job: _Job) -> None:
        """The client gave up: a job that has not started leaves the queue and its slot."""
        with self._cond:
            if job.state == "waiting":
                self._waiting.remove(job)
                job.state = "dropped"
                self._pending -= 1

    # --- the inference thread ---------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                group = self._take_group()
            self._execute(group)

    def _take_group(self) -> list[_Job]:
        """The oldest waiting job and, if it has a key, later ones with the same key while
        the padded batch stays within the token budget. Called under the lock."""
        group = [self._waiting.popleft()]
        first = group[0]
        if first.key is not None:
            items, width = len(first.items), first.width
            for job in list(self._waiting):
                if job.key != first.key:
                    continue
                merged_width = max(width, job.width)
                if (items + len(job.items)) * merged_width > self.token_budget:
                    continue
                self._waiting.remove(job)
                group.append(job)
                items, width = items + len(job.items), merged_width
        for job in group:
            job.state = "running"
        return group

    def _execute(self, group: list[_Job]) -> None:
        started = time.monotonic()
        results: list[Any] = [None] * len(group)
        error: BaseException | None = None
        try:
            results = self._call(group)
        except BaseException as exc:  # every job of the call gets the call's error
            error = exc
        elapsed = time.monotonic() - started
        # The slots are freed before the results go out: a client that sends its next
        # request as soon as it has an answer must find its slot free again.
        with self._cond:
            self.calls += 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed
            for job in group:
                job.state = "done"
            self._pending -= len(group)
        for job, result in zip(group, results, strict=True):
            _deliver(job, result, error)

    @staticmethod
    def _call(group: list[_Job]) -> list[Any]:
        """One call for the group: a plain job's result, or each merged job's outputs."""
        if group[0].key is None:
            return [group[0].run()]
        outputs = group[0].run([item for job in group for item in job.items])
        results, offset = [], 0
        for job in group:
            results.append(outputs[offset : offset + len(job.items)])
            offset += len(job.items)
        return results

    def shutdown(self) -> None:
        """Stop taking jobs; waiting ones are cancelled, a running one finishes."""
        with self._cond:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            for job in waiting:
                job.state = "dropped"
                self._pending -= 1
            self._cond.notify_all()
        for job in waiting:
            with suppress(RuntimeError):  # its event loop is closed already
                job.loop.call_soon_threadsafe(job.future.cancel)


def _deliver(job: _Job, result: Any, error: BaseException | None) -> None:
    with suppress(RuntimeError):  # the job's event loop is closed: nobody waits for it
        job.loop.call_soon_threadsafe(_resolve, job.future, result, error)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: nobody waits for it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
