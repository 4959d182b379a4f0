"""bench/skill.py on the micro model for a few CPU seconds, so it cannot silently break."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_skill_benchmark_on_the_micro_model(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "bench/skill.py", "--model", "micro", "--families", "sort"]
    argv += ["--minutes", "0.1", "--marks", "0.05", "0.1", "--examples", "60"]
    argv += ["--set", "candidate_every=20", "--out", str(out), "--cache", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "skill.json").read_text())
    assert result["config"]["learner"] == {"candidate_every": 20}
    (run,) = result["results"]
    assert [
        m["cpu_minutes"] >= mark for m, mark in zip(run["marks"], (0.05, 0.1), strict=True)
    ] == [True] * 2
    assert all(m["step"] > 0 for m in run["marks"])
    assert run["marks"][-1]["base"] is not None  # the base model was evaluated on the probes
    assert "| sort |" in (out / "skill.md").read_text()
