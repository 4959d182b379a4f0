"""The inference engine follows the registry's active version within a second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from learner import registry
from learner.config import GenerationParams, LearnerConfig, LoraSettings
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.tasks import make_examples
from learner.worker import Learner
from server.inference import InferenceEngine, ModelNotReady, UnknownModel


def _two_versions(engine: Engine, tmp_path: Path, model_dir: Path) -> None:
    examples = [NewExample(e["prompt"], e["target"]) for e in make_examples("copy", 40)]
    with write_transaction(engine) as conn:
        ingest_batch(conn, "copy-l1", examples)
    config = LearnerConfig(
        lora=LoraSettings(r=4, alpha=8),
        batch_size=4,
        candidate_every=2,
        max_steps=4,
        eval_max_probes=4,
        max_new_tokens=4,
        device="cpu",
    )
    Learner(engine, config, tmp_path, model_dir, "micro", holder="t").run()


def _wait(predicate: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_hot_swap_follows_the_registry(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    _two_versions(engine, tmp_path, micro_model_dir)
    inference = InferenceEngine(engine, lambda: micro_model_dir, device="cpu", poll_seconds=0.2)
    params = GenerationParams(max_new_tokens=4)
    with pytest.raises(ModelNotReady):
        inference.complete("base", ["copy ab ="], params)  # starts loading
    _wait(lambda: inference.ready, 60)
    try:
        for version in (1, 2, 1):
            with write_transaction(engine) as conn:
                registry.log_event(conn, "force", "test", version, "swap test")
            swap_seconds = _wait(lambda v=version: inference.active == v, 1.0)
            assert swap_seconds < 1.0
            _, served = inference.complete("lifelong", ["copy ab ="], params)
            assert served == f"lifelong@{version}"
        _, served = inference.complete("lifelong@2", ["copy ab ="], params)
        assert served == "lifelong@2"
        _, served = inference.complete("base", ["copy ab ="], params)
        assert served == "base"
        with pytest.raises(UnknownModel):
            inference.complete("lifelong@9", ["copy ab ="], params)
    finally:
        inference.stop()
