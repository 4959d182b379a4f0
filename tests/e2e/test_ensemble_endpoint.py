"""An OpenAI-compatible endpoint as a difficulty-ensemble member: a real ``lifelong serve``
answers through ``/v1/completions`` exactly as the same model loaded locally does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from helpers import submit
from sqlalchemy import create_engine

from learner.builtin.families import make_examples
from learner.curriculum.ensemble import EndpointMember, LocalMember
from learner.store.difficulty import pending_examples


def test_endpoint_member_agrees_with_the_local_model(
    start_server: Any, tmp_path: Path, base_model: str
) -> None:
    db_url = f"sqlite:///{tmp_path / 'endpoint.db'}"
    server = start_server(db_url, env={"LIFELONG_ALIGNMENT_SUITE": "false"})
    examples = make_examples("copy", 24, 1, seed=5) + make_examples("reverse", 24, 1, seed=5)
    with server.client("submit") as http:
        submit(http, "mixed", examples)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        items = pending_examples(conn, ["x"], 0, 100)
    engine.dispose()
    assert len(items) == len(examples)

    url = f"{server.url}/v1"
    remote = EndpointMember("remote", "base", url, server.keys["submit"], 16, timeout=60)
    local = LocalMember("local", Path(base_model), torch.device("cpu"), 16, 64)
    got = [a.correct for a in remote.answer(items)]
    want = [a.correct for a in local.answer(items)]
    assert got == want
