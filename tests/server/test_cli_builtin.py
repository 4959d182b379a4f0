"""``lifelong builtin train``: builds a preset where ``serve`` would look for it, reports its
weights' sha256, and the seeded recipe gives the same weights when rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import describe
from typer.testing import CliRunner, Result

from learner.builtin.model import builtin_root
from server.cli import app


def build(data_dir: Path, *extra: str) -> Result:
    argv = ["builtin", "train", "--preset", "micro", "--data-dir", str(data_dir), *extra]
    return CliRunner().invoke(app, argv, env={"COLUMNS": "100"})


def test_train_builds_where_serve_looks_and_rebuilds_the_same_weights(tmp_path: Path) -> None:
    first = build(tmp_path, "--json")
    assert first.exit_code == 0, describe(first)
    facts = json.loads(first.stdout)
    final = builtin_root(tmp_path, "micro") / "final"
    assert facts["path"] == str(final) and (final / "model.safetensors").is_file()
    assert facts["model"] == "builtin:micro" and len(facts["sha256"]) == 64
    assert set(facts["eval_greedy_accuracy"]) >= {"copy-l1", "alignment-l1"}

    again = build(tmp_path, "--json")  # built already: found, not retrained
    assert json.loads(again.stdout)["bootstrap_seconds"] == facts["bootstrap_seconds"]
    rebuilt = build(tmp_path, "--rebuild", "--json")
    assert rebuilt.exit_code == 0, describe(rebuilt)
    assert json.loads(rebuilt.stdout)["sha256"] == facts["sha256"]  # a reproducible recipe

    text = build(tmp_path)
    assert text.exit_code == 0 and f"sha256: {facts['sha256']}" in text.stdout


def test_unknown_preset_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["builtin", "train", "--preset", "huge",
                                      "--data-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output, describe(result)
    assert not (tmp_path / "models").exists()
