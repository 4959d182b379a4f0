"""bench/frontier.py on the micro model for a few CPU seconds, so it cannot silently break,
and its held-out alignment set: large, deterministic, and disjoint from the builtin suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from learner.builtin import families as tasks
from learner.builtin.suites import suite_examples

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))

import heldout_alignment  # noqa: E402


def test_heldout_alignment_is_large_deterministic_and_never_in_the_suite() -> None:
    examples = heldout_alignment.heldout_alignment()
    prompts = [e["prompt"] for e in examples]
    suite = {e["prompt"] for level in (1, 2, 3) for e in suite_examples(level)}
    assert len(set(prompts)) == len(prompts) >= 1000
    assert not set(prompts) & suite
    assert examples == heldout_alignment.heldout_alignment()
    harmful = [e for e in examples if e["target"] == tasks.REFUSAL]
    benign = [e for e in examples if e["target"] != tasks.REFUSAL]
    assert len(harmful) >= 500 and len(benign) >= 500
    assert all(tasks.is_harmful(e["prompt"]) for e in harmful)
    assert not any(tasks.is_harmful(e["prompt"]) for e in benign)
    # Over-refusal is measured: benign lookalikes share words with the harmful requests.
    lookalikes = [e for e in benign if e["target"] in heldout_alignment.BENIGN_LOOKALIKES.values()]
    assert len(lookalikes) >= 250
    words = {w for r in tasks.HARMFUL_REQUESTS for w in r.split() if len(w) > 2}
    assert all(set(k.split()) & words for k in heldout_alignment.BENIGN_LOOKALIKES)
    assert all(len(e["prompt"] + e["target"]) <= tasks.MAX_EXAMPLE_CHARS for e in examples)
    excluded = heldout_alignment.heldout_alignment(exclude=prompts[:10])
    assert len(excluded) == len(examples) and not set(prompts[:10]) & {
        e["prompt"] for e in excluded
    }


def test_heldout_alignment_shares_no_phrasing_with_the_wide_bootstrap_set() -> None:
    """The ``sturdy`` base trains on alignment level 4: its openers, contexts and lookalikes
    must not be the held-out set's, or its retention would be measured on its training data."""
    assert not set(tasks._WIDE_OPENERS) & set(heldout_alignment.HELDOUT_OPENERS)
    assert not set(tasks._WIDE_CONTEXTS) & set(heldout_alignment.HELDOUT_CONTEXTS)
    assert not set(tasks.WIDE_LOOKALIKES) & set(heldout_alignment.BENIGN_LOOKALIKES)
    wide = {e["prompt"] for e in tasks.make_examples("alignment", 5000, 4, seed=0)}
    assert not wide & {e["prompt"] for e in heldout_alignment.heldout_alignment()}


@pytest.mark.slow
def test_frontier_benchmark_on_the_micro_model(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "bench/frontier.py", "--model", "micro", "--families", "sort"]
    argv += ["--recipes", "baseline", "--seeds", "1", "--minutes", "0.1", "--marks", "0.05"]
    argv += ["0.1", "--examples", "60", "--set-learner", "candidate_every=20"]
    argv += ["--out", str(out), "--cache", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((out / "frontier.json").read_text())
    assert data["config"]["recipes"]["baseline"]["learner"]["candidate_every"] == 20
    assert data["jobs_done"] == data["jobs_total"] == 1
    assert data["heldout"]["harmful"] + data["heldout"]["benign"] >= 1000
    (run,) = data["results"]
    assert (run["recipe"], run["family"], run["seed"]) == ("baseline", "sort", 0)
    assert [m["mark"] for m in run["marks"]] == [0.05, 0.1]
    assert all(m["cpu_minutes"] >= m["mark"] and m["step"] > 0 for m in run["marks"])
    for mark in run["marks"]:
        assert set(mark["metrics"]) == set(heldout_alignment.METRICS)
        assert mark["metrics"]["family_base"] is not None
        assert mark["metrics"]["forgetting_points"] is not None
    assert run["versions"] and all("scale" in v for v in run["versions"])
    assert set(run["scores"]["base"]) >= {"family", "refusal", "benign_answer", "foundation"}
    assert (out / "frontier-reports" / "baseline-sort-s0.json.gz").is_file()
    assert "| baseline@micro | 0.05 |" in (out / "frontier.md").read_text()  # not tiny: labelled
    assert (out / "frontier-sort.png").stat().st_size > 0
    # Re-rendering from the json alone gives the same table.
    again = tmp_path / "again"
    argv = [sys.executable, "bench/frontier.py", "--results-from", str(out / "frontier.json")]
    done = subprocess.run([*argv, "--out", str(again)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (again / "frontier.md").read_text() == (out / "frontier.md").read_text()


def test_merged_results_keep_every_run_and_command() -> None:
    import frontier

    first = {"command": "a ; b", "jobs_total": 2, "jobs_done": 2, "date": "d1", "results": [1, 2]}
    second = {"command": "b ; c", "jobs_total": 3, "jobs_done": 1, "date": "d2", "results": [3]}
    meta, results = frontier.merge_results([first, second])  # type: ignore[arg-type]
    assert results == [1, 2, 3]
    assert meta == {"command": "a ; b ; c", "jobs_total": 5, "jobs_done": 3, "date": "d1"}
    for recipe in ("capacity", "first_tokens"):  # variants of the defaults: nothing pinned
        resolved = frontier.resolve_recipe(recipe, {}, {})
        frontier.learner_config(resolved, 0)
        assert "scales" not in resolved["gate"]


def test_first_seed_adds_seeds_to_an_earlier_run() -> None:
    import frontier

    args = frontier.parse_args(["--recipes", "defaults", "--families", "sort", "--seeds", "2",
                                "--first-seed", "1"])  # fmt: skip
    names = [job["name"] for job in frontier.jobs(frontier.make_config(args))]
    assert names == ["defaults-sort-s1", "defaults-sort-s2"]


def test_idle_watch_tells_a_resting_learner_from_a_busy_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import frontier

    clock = [0.0]
    monkeypatch.setattr(frontier.time, "monotonic", lambda: clock[0])
    watch = frontier.IdleWatch(seconds=120)
    for step in range(10):  # training: a step every 10 s, the teacher resting or not
        clock[0] += 10
        assert not watch.resting(step, teacher_rests=step % 2 == 0)
    clock[0] += 200  # judging a candidate inline: no step for long, but no rest either
    assert not watch.resting(9, teacher_rests=False)
    clock[0] += 119  # then resting (polling and recording its rests costs a little CPU)
    assert not watch.resting(9, teacher_rests=True)
    clock[0] += 2  # 121 s without a step, resting all along
    assert watch.resting(9, teacher_rests=True)
    assert not watch.resting(10, teacher_rests=True)  # a step: the watch starts over
