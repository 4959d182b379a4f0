"""Ingestion rejects examples that do not fit the base model's context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from server.process.settings import LimitSettings

WIDE = LimitSettings(max_prompt_chars=1000, max_target_chars=1000)


def test_builtin_context_limit(make_client: Any, api: Any) -> None:
    client = make_client(base_model="builtin:micro", limits=WIDE)
    fits = {"prompt": "p" * 200, "target": "t" * 54}
    too_long = {"prompt": "p" * 200, "target": "t" * 55}
    ok = client.post("/v1/tasks", json={"bucket": "b", "examples": [fits]}, headers=api.auth())
    assert ok.status_code == 202, ok.text
    bad = client.post(
        "/v1/tasks", json={"bucket": "b", "examples": [fits, too_long]}, headers=api.auth()
    )
    assert bad.status_code == 422
    message = api.error(bad)
    assert "examples[1]" in message and "255 characters" in message
    assert "builtin:micro takes at most 254" in message
    assert api.count() == 1


def test_local_model_directory_limit(make_client: Any, api: Any, tmp_path: Path) -> None:
    model_dir = tmp_path / "local-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"n_positions": 34}))
    client = make_client(base_model=str(model_dir), limits=WIDE)
    bad = client.post(
        "/v1/tasks",
        json={"bucket": "b", "examples": [{"prompt": "p" * 20, "target": "t" * 13}]},
        headers=api.auth(),
    )
    assert bad.status_code == 422 and "at most 32" in api.error(bad)
    assert api.count() == 0
