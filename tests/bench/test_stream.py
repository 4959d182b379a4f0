"""bench/stream.py --quick on a tiny configuration, so the benchmark cannot silently break."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_stream_benchmark_quick_on_the_micro_model(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "bench/stream.py", "--quick", "--model", "micro"]
    argv += ["--steps", "30", "--examples", "40", "--out", str(out), "--cache", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "stream.json").read_text())
    assert set(result["summary"]["policies"]) == {"uniform", "lp_zpd"}
    for run in result["runs"]:
        assert run["steps"] > 0, run
        assert 0.0 <= run["noise_share"] <= 1.0
        assert run["curve"][0][0] == 0  # starts from the base model
        assert abs(sum(run["shares"].values()) - 1.0) < 1e-3, run["shares"]
    text = (out / "stream.md").read_text()
    assert "| uniform |" in text and "| lp_zpd |" in text
    assert (out / "stream-accuracy.png").stat().st_size > 0
