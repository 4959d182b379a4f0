"""The soak benchmark, quick (``bench/soak.py --quick``: a minute of mixed traffic on a
real service with its learner), so that it cannot silently break.

A minute cannot show memory growth; what they can show: every route answers without a
5xx other than 503, every acknowledged example is stored exactly once, the learner's
retention keeps ``teacher_decisions`` at its configured cap, and the report, its samples
and the plot are written.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_soak_keeps_tables_bounded_and_loses_nothing(tmp_path: Path) -> None:
    argv = [sys.executable, "bench/soak.py", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert "| target | measured | met |" in (tmp_path / "soak.md").read_text()
    samples, totals = report["samples"], report["totals"]
    assert len(samples) >= 10
    assert all(s["server"]["rss_mb"] and s["learner"]["rss_mb"] for s in samples)
    bad = {r: s for r, s in totals.items() if any(k.startswith("5") and k != "503" for k in s)}
    assert not bad, bad
    assert report["accepted"] > 0 and report["stored"] == report["accepted"]
    assert totals["POST /v1/tasks"].get("422") and totals["POST /v1/tasks"].get("202")
    for route in ("GET /v1/buckets", "GET /v1/teacher", "GET /v1/evaluations", "GET /metrics"):
        assert set(totals[route]) == {"200"}, (route, totals[route])
    assert totals["POST /v1/completions"].get("200"), totals["POST /v1/completions"]
    decisions = [s["rows"]["teacher_decisions"] for s in samples]
    # About a round every 10 s on the micro model beside this traffic: three times the cap
    # in a minute without pruning; with it, passes every 5 s (between training steps, so a
    # candidate's judging can delay one: seen 4 once in the suite) bring it back to its cap.
    step = max(b - a for a, b in itertools.pairwise(decisions))
    pruned = any(b < a for a, b in itertools.pairwise(decisions))
    assert pruned or max(decisions) <= 2, decisions
    assert min(decisions[len(decisions) // 2 :]) <= 2 + step, decisions
    assert max(decisions) <= 2 + 3 * step, decisions
    assert report["growth"]["server.rss_mb"]["last"] > 0
