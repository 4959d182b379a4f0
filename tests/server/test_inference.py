"""The inference engine follows the registry's active version within a second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from learner.config import GenerationParams
from learner.model import registry
from learner.store.db import write_transaction
from server.serving.engine import InferenceEngine, ModelNotReady, UnknownModel


def _wait(predicate: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_hot_swap_follows_the_registry(
    engine: Engine, adapters: Any, data_dir: Path, micro_model_dir: Path
) -> None:
    first = adapters.add(real=True)
    second = adapters.add(parent=first, real=True)
    inference = InferenceEngine(
        engine, lambda: micro_model_dir, device="cpu", poll_seconds=0.2, data_dir=data_dir
    )
    params = GenerationParams(max_new_tokens=4)
    with pytest.raises(ModelNotReady):
        inference.complete("base", ["copy ab ="], params)  # starts loading
    _wait(lambda: inference.ready, 60)
    try:
        for version in (first, second, first):
            with write_transaction(engine) as conn:
                registry.log_event(conn, "force", "test", version, "swap test")
            swap_seconds = _wait(lambda v=version: inference.active == v, 1.0)
            assert swap_seconds < 1.0
            _, served = inference.complete("lifelong", ["copy ab ="], params)
            assert served == f"lifelong@{version}"
        _, served = inference.complete(f"lifelong@{second}", ["copy ab ="], params)
        assert served == f"lifelong@{second}"
        _, served = inference.complete("base", ["copy ab ="], params)
        assert served == "base"
        with pytest.raises(UnknownModel):
            inference.complete("lifelong@9", ["copy ab ="], params)
    finally:
        inference.stop()
