"""Under a completion flood, ingestion and health checks stay fast (bench/load.py, quick).

Eight clients send completions back to back into a queue of four slots; meanwhile a
client submits batches and another polls ``/healthz``. Every overflowing completion must
be refused at once with Retry-After (429, or 503 while loading), never a 500 or a hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_ingestion_and_health_stay_fast_under_a_completion_flood(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = [sys.executable, "bench/load.py", "--seconds", "10", "--json", str(out)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    print(done.stdout)
    kinds = result["kinds"]
    assert result["errors"] == {}, result["errors"]
    assert result["refusals_without_retry_after"] == 0
    assert kinds["completions"]["statuses"].get("429", 0) > 0, "the queue never overflowed"
    assert kinds["completions"]["statuses"].get("200", 0) > 0
    assert kinds["tasks"]["p99_s"] < 1.0, kinds["tasks"]
    # The 0.2 s target is bench/load.py's, run alone; here two other workers' servers and
    # learners share the 2 cores (seen in the suite: p50 0.01 s, one of 75 at 0.26 s). A
    # health check queued behind the completions would take seconds.
    assert kinds["healthz"]["p50_s"] < 0.05, kinds["healthz"]
    assert kinds["healthz"]["p99_s"] < 0.5, kinds["healthz"]
    assert set(kinds["tasks"]["statuses"]) == {"202"}
