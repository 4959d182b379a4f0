"""The inference queue merges waiting jobs of one key into one call, within the budget."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.serving.queue import InferenceQueue


def _echo(calls: list[list[str]]):  # type: ignore[no-untyped-def]
    def run(items: list[str]) -> list[str]:
        calls.append(list(items))
        return [item.upper() for item in items]

    return run


def test_waiting_jobs_with_one_key_run_as_one_call_and_get_their_own_outputs() -> None:
    queue = InferenceQueue(max_pending=10, token_budget=1000)
    release = threading.Event()
    calls: list[list[str]] = []

    async def scenario() -> None:
        blocker = asyncio.ensure_future(queue.run(release.wait))
        await asyncio.sleep(0.05)  # the thread is busy: the next jobs wait together
        jobs = [
            asyncio.ensure_future(queue.run_merged("k", [f"a{i}", f"b{i}"], 10, _echo(calls)))
            for i in range(3)
        ]
        other = asyncio.ensure_future(queue.run_merged("other", ["z"], 10, _echo(calls)))
        await asyncio.sleep(0.05)
        assert queue.pending == 5
        release.set()
        assert await blocker is True
        outputs = await asyncio.gather(*jobs)
        assert outputs == [[f"A{i}", f"B{i}"] for i in range(3)]
        assert await other == ["Z"]

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        queue.shutdown()
    assert calls == [["a0", "b0", "a1", "b1", "a2", "b2"], ["z"]]
    assert queue.pending == 0


def test_a_merged_batch_stays_within_the_token_budget() -> None:
    # 2 items x width 100 per job; budget 400 fits two jobs (4 x 100), not three.
    queue = InferenceQueue(max_pending=10, token_budget=400)
    release = threading.Event()
    calls: list[list[str]] = []

    async def scenario() -> None:
        blocker = asyncio.ensure_future(queue.run(release.wait))
        await asyncio.sleep(0.05)
        jobs = [
            asyncio.ensure_future(queue.run_merged("k", [f"a{i}", f"b{i}"], 100, _echo(calls)))
            for i in range(3)
        ]
        await asyncio.sleep(0.05)
        release.set()
        await blocker
        await asyncio.gather(*jobs)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        queue.shutdown()
    assert [len(c) for c in calls] == [4, 2]


def test_an_error_reaches_every_job_of_the_call() -> None:
    queue = InferenceQueue(max_pending=10)
    release = threading.Event()

    def fail(items: list[str]) -> list[str]:
        raise LookupError(f"no model for {len(items)} prompts")

    async def scenario() -> None:
        blocker = asyncio.ensure_future(queue.run(release.wait))
        await asyncio.sleep(0.05)
        jobs = [asyncio.ensure_future(queue.run_merged("k", ["p"], 1, fail)) for _ in range(2)]
        await asyncio.sleep(0.05)
        release.set()
        await blocker
        for job in jobs:
            with pytest.raises(LookupError, match="no model for 2 prompts"):
                await job

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        queue.shutdown()
    assert queue.pending == 0
