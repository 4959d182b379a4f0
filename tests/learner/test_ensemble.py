"""The difficulty ensemble on real models and databases: members answer, the scorer stores
the answers and fits IRT difficulties (endpoint members against a live server: tests/e2e)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import Engine, func, select

from learner.builtin.families import make_examples
from learner.config import DifficultyConfig
from learner.curriculum.ensemble import (
    DifficultyScorer,
    EndpointMember,
    EnsembleContext,
    LocalMember,
    build_members,
)
from learner.model.decoders import parse_endpoint
from learner.store.db import write_transaction
from learner.store.difficulty import pending_examples
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import DifficultyScore, Example, ItemDifficulty

CPU = torch.device("cpu")


def context(model_dir: Path) -> EnsembleContext:
    return EnsembleContext("builtin:micro", model_dir, CPU, max_length=64)


def submit(engine: Engine) -> int:
    with write_transaction(engine) as conn:
        for bucket, family in (("copy-l1", "copy"), ("add-l1", "addition")):
            examples = make_examples(family, 12, 1, seed=3)
            grader = "numeric" if family == "addition" else "exact"
            ingest_batch(conn, bucket, [NewExample(e["prompt"], e["target"]) for e in examples],
                         grader=grader)  # fmt: skip
        return int(conn.execute(select(func.count()).select_from(Example)).scalar_one())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parse_endpoint() -> None:
    assert parse_endpoint("openai:gpt-x@https://h:1/v1") == ("gpt-x", "https://h:1/v1")
    for bad in ("openai:@http://h/v1", "openai:m", "openai:m@ftp://h", "openai:m@h/v1"):
        with pytest.raises(ValueError, match="openai:<model>@"):
            parse_endpoint(bad)


def test_members_of_a_builtin_model(micro_model_dir: Path, tmp_path: Path) -> None:
    members = build_members(DifficultyConfig(), context(micro_model_dir))
    names = [m.name for m in members]
    assert names[0] == "base:builtin:micro" and len(names) == len(set(names)) >= 2
    assert all(isinstance(m, LocalMember) for m in members)
    only_base = build_members(
        DifficultyConfig(include_builtin_checkpoints=False), context(micro_model_dir)
    )
    assert [m.name for m in only_base] == ["base:builtin:micro"]
    extra = build_members(
        DifficultyConfig(members=(str(micro_model_dir), "openai:m@http://127.0.0.1:9/v1")),
        context(micro_model_dir),
    )
    assert isinstance(extra[-1], EndpointMember) and extra[-2].name == str(micro_model_dir)
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        build_members(DifficultyConfig(members=(str(tmp_path),)), context(micro_model_dir))


def test_scorer_answers_everything_and_fits(engine: Engine, micro_model_dir: Path) -> None:
    n = submit(engine)
    members = build_members(DifficultyConfig(), context(micro_model_dir))
    config = DifficultyConfig(batch_size=10, min_items=8, max_new_tokens=8, min_refit_seconds=0)
    scorer = DifficultyScorer(engine, members, config)
    rounds = 0
    while scorer.run_once():
        rounds += 1
        assert rounds < 20
    with engine.connect() as conn:
        answers = conn.execute(select(DifficultyScore)).all()
        fitted = conn.execute(select(ItemDifficulty)).all()
        assert pending_examples(conn, scorer.names, 0, 10) == []
    assert len(answers) == n * len(members)
    assert all(a.correct in (0, 1) and a.mean_logprob is not None for a in answers)
    assert len(fitted) == n and all(f.std_error > 0 and f.model == "1pl" for f in fitted)
    fit = scorer.summary["fit"]
    assert fit["items"] == n and set(fit["member_ability"]) == set(scorer.names)
    # Nothing new: no further refit until the answered set grows by refit_growth.
    assert not scorer.maybe_refit(caught_up=True)


def test_refit_schedule(engine: Engine) -> None:
    config = DifficultyConfig(min_items=10, refit_growth=0.5, min_refit_seconds=3600)
    scorer = DifficultyScorer(engine, [LocalMember("m", Path("."), CPU, 8, 64)], config)
    assert not scorer.refit_due(9, caught_up=True)  # too few items to fit
    assert scorer.refit_due(10, caught_up=False)  # the first fit
    scorer.fitted_items, scorer._fitted_at = 100, time.monotonic()
    assert not scorer.refit_due(100, caught_up=True)  # nothing new
    assert not scorer.refit_due(140, caught_up=False)  # grown by less than half
    assert scorer.refit_due(151, caught_up=False)
    assert not scorer.refit_due(120, caught_up=True)  # caught up, but fitted just now
    scorer._fitted_at -= 3600
    assert scorer.refit_due(120, caught_up=True)


def test_a_failing_member_does_not_stop_the_others(engine: Engine, micro_model_dir: Path) -> None:
    n = submit(engine)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    down = EndpointMember(f"openai:m@{url}", "m", url, "", 8, timeout=2)
    local = LocalMember("local", micro_model_dir, CPU, 8, 64)
    scorer = DifficultyScorer(engine, [local, down], DifficultyConfig(batch_size=50))
    assert scorer.score_batch() == n
    with engine.connect() as conn:
        members = conn.execute(select(DifficultyScore.member).distinct()).scalars().all()
        still = pending_examples(conn, scorer.names, 0, 100)
    assert members == ["local"]
    assert len(still) == n and all(p.missing == (down.name,) for p in still)


def test_scorer_thread_starts_and_stops(engine: Engine, micro_model_dir: Path) -> None:
    submit(engine)
    local = LocalMember("local", micro_model_dir, CPU, 8, 64)
    scorer = DifficultyScorer(engine, [local], DifficultyConfig(idle_seconds=0.05, min_items=4))
    scorer.start()
    try:
        deadline = time.monotonic() + 30
        while not scorer.fitted_items and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scorer.stop()
    assert scorer.fitted_items > 0 and scorer._thread is None
