"""bench/gpu.py and bench/learner_loop.py on a CPU with a tiny model: the code paths of the
GPU benchmark run here, so they cannot silently break before a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_gpu_benchmark_runs_on_a_tiny_llama_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(["bench/gpu.py", "--preset", "tiny", "--device", "cpu", "--steps", "4",
         "--out", str(out), "--cache", str(tmp_path)])  # fmt: skip
    report = json.loads((out / "gpu.json").read_text())
    assert report["frozen_params"] > 0 and report["lora_params"] > 0
    for run_ in report["runs"].values():
        assert run_["tokens"] > 0 and run_["tokens_per_s"] > 0
        assert run_["mfu"] is None  # no peak FLOP/s known for a CPU
    assert report["ratio"] > 0
    assert (tmp_path / "llama-tiny" / "config.json").exists()


def test_learner_loop_benchmark_runs_on_the_micro_model(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(["bench/learner_loop.py", "--model", "micro", "--steps", "6", "--examples", "20",
         "--candidate-every", "3", "--out", str(out), "--cache", str(tmp_path)])  # fmt: skip
    report = json.loads((out / "learner_loop.json").read_text())
    full = report["full"]
    assert full["tokens"] > 0 and [b["grouped"] for b in report["bare"]] == [True, False] * 2
    assert full["parts_s"]["candidates"] > 0  # a candidate was made and judged
    assert 0.0 < full["judging_share"] < 1.0 and sum(full["verdicts"].values()) == 2
    assert full["judging_detail_s"]["candidate and reference answers"] > 0
    text = (out / "learner_loop.md").read_text()
    assert "full / grouped bare" in text and "Judging share" in text
