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
    assert len(result["stream"]) >= 12
    assert {s["category"] for s in result["stream"]} == {
        "mastered", "noise", "too_hard", "fast", "slow"
    }  # fmt: skip
    for run in result["runs"]:
        assert run["steps"] > 0, run
        assert run["curve"][0][0] == 0  # starts from the base model
        assert abs(sum(run["shares"].values()) - 1.0) < 1e-3, run["shares"]
        assert abs(sum(run["category_shares"].values()) - 1.0) < 1e-3, run["category_shares"]
    text = (out / "stream.md").read_text()
    assert "| uniform |" in text and "| lp_zpd |" in text
    assert "noise-shuffled" in text and "Paired against `uniform`" in text
    assert (out / "stream-accuracy.png").stat().st_size > 0
    assert (out / "stream-buckets-lp_zpd.png").stat().st_size > 0


def test_paired_bootstrap_tells_a_real_difference_from_none() -> None:
    """The report's paired intervals: a policy twice as fast as uniform on every seed has
    a steps ratio near 0.5 with an interval below 1; an identical one straddles 1."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import stream_report

    def run(policy: str, seed: int, reach_at: int) -> dict:
        shares = {"noise": 0.1, "fast": 0.9}
        return {"policy": policy, "seed": seed, "variant": "", "steps": 1000,
                "final_accuracy": 0.6, "curve": [[0, 0.0], [reach_at, 0.6]], "forgetting": 0.0,
                "alignment_retention": 1.0, "category_shares": shares}  # fmt: skip

    rng = __import__("random").Random(0)
    runs = []
    for seed in range(5):
        at = 400 + rng.randrange(-50, 50)
        runs += [run("uniform", seed, at), run("fast", seed, at // 2),
                 run("same", seed, at + rng.randrange(-30, 30))]  # fmt: skip
    summary = stream_report.summarize(runs, ("noise",), 1000)
    fast = summary["paired_vs_uniform"]["fast"]["steps_to_90pct"]
    same = summary["paired_vs_uniform"]["same"]["steps_to_90pct"]
    assert 0.45 < fast["estimate"] < 0.55 and fast["high"] < 1.0, fast
    assert same["low"] < 1.0 < same["high"], same
    assert summary["paired_vs_uniform"]["fast"]["auc"]["estimate"] > 1.0
