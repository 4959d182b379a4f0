"""What the end-to-end tests share besides fixtures: the environment of a server or learner
process with a learner, and the HTTP and file checks several tests make.

Imported as ``from helpers import ...`` (pytest puts this directory on ``sys.path`` for the
tests in it, as it does for ``conftest``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from learner.builtin.families import make_examples

REPO_ROOT = Path(__file__).resolve().parents[2]

# A learner for a test: on the CPU, polling for work and renewing its lease often, in small
# batches. Every test with a learner starts from this and sets its own pace (how often it
# checkpoints and makes candidates) on top: {**LEARNER_ENV, "LIFELONG_...": "..."}.
LEARNER_ENV = {
    "LIFELONG_LEARNER__DEVICE": "cpu",
    "LIFELONG_LEARNER__BATCH_SIZE": "16",
    "LIFELONG_LEARNER__POLL_SECONDS": "0.2",
    "LIFELONG_LEARNER__LEASE_SECONDS": "5",
}

# A learner on the micro builtin model, which learns nothing: the tests of the machinery
# around it (crashes, leases, metrics, rollbacks) want its steps, saves and candidates
# quick, and neither difficulty estimates nor the alignment suite.
MICRO_LEARNER_ENV = {
    **LEARNER_ENV,
    "LIFELONG_LEARNER__BATCH_SIZE": "8",
    "LIFELONG_LEARNER__POLL_SECONDS": "0.1",
    "LIFELONG_DIFFICULTY__ENABLED": "false",
    "LIFELONG_ALIGNMENT_SUITE": "false",
}

# Retention checks that always pass and no gain needed: every candidate is promoted.
PROMOTE_EVERY_CANDIDATE = {
    "LIFELONG_GATE__MIN_GAIN": "-1",
    "LIFELONG_GATE__MAX_FORGETTING": "1",
    "LIFELONG_GATE__MAX_NFR": "1",
}

# The learning loop on sort-l1 (test_learning_loop; test_shutdown stops it).
LOOP_ENV = {
    **LEARNER_ENV,
    "LIFELONG_LEARNER__LEARNING_RATE": "0.003",
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "80",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "10",
    "LIFELONG_GATE__EVAL_MAX_PROBES": "40",
    "LIFELONG_LEARNER__LEASE_SECONDS": "3",
    # test_learning_loop is about the loop (train, version, gate on gain, serve the promoted
    # version). With the builtin alignment suite the small model cannot learn sort-l1 by
    # +0.2 without losing refusals, and the gate rightly rejects those candidates:
    # tests/e2e/test_poisoning.py covers the suite, the README the drift.
    "LIFELONG_ALIGNMENT_SUITE": "false",
    # Scale search multiplies the candidates' judging time; it has its own tests
    # (tests/learner/worker/test_scale_search.py, tests/e2e/test_teacher_focus.py).
    "LIFELONG_GATE__SCALES": "1",
    # A teacher that never rests: with one bucket, lp_zpd can call sort-l1 stalled while its
    # held-out loss still falls (seen: accuracy 0.44 after 16 rounds, then rests until the
    # test timed out). The teacher's own behaviour is test_teacher_focus's subject.
    "LIFELONG_TEACHER__POLICY": "round_robin",
}

SORT_BUCKET = "sort-l1"  # a skill the builtin presets' bootstrap never saw
MAX_PROMPTS = 64  # the server's default limit of prompts in one completion request


# --- the HTTP API ------------------------------------------------------------------------


def submit(http: httpx.Client, bucket: str, examples: list[dict[str, str]]) -> dict[str, Any]:
    """``POST /v1/tasks``, which must accept the batch; its answer."""
    response = http.post("/v1/tasks", json={"bucket": bucket, "examples": examples})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def submit_sort(http: httpx.Client, n: int = 400, seed: int = 7) -> list[dict[str, str]]:
    """``n`` generated sort-l1 examples submitted to ``SORT_BUCKET``; the examples."""
    examples = make_examples("sort", n, level=1, seed=seed)
    submit(http, SORT_BUCKET, examples)
    return examples


def probe_examples(http: httpx.Client, bucket: str) -> list[dict[str, Any]]:
    """The probe split of ``bucket`` (every one of them, up to 1000)."""
    page = http.get(f"/v1/buckets/{bucket}/examples", params={"split": "probe", "limit": 1000})
    assert page.status_code == 200, page.text
    return list(page.json()["examples"])


def completions(http: httpx.Client, model: str, prompts: list[str], max_tokens: int) -> list[str]:
    """Greedy completions of ``prompts`` by ``model``, ``MAX_PROMPTS`` prompts a request."""
    out: list[str] = []
    for start in range(0, len(prompts), MAX_PROMPTS):
        response = http.post(
            "/v1/completions",
            json={
                "model": model,
                "prompt": prompts[start : start + MAX_PROMPTS],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )
        assert response.status_code == 200, response.text
        out += [c["text"] for c in response.json()["choices"]]
    return out


def promoted(http: httpx.Client, min_version: int = 1, min_step: int = 0) -> Any:
    """``/v1/adapters/active`` once a version >= ``min_version``, trained for at least
    ``min_step`` steps, is active; None before (a predicate for ``wait_for``)."""
    active = http.get("/v1/adapters/active").json()
    version = active["version"]
    if version is None or version < min_version:
        return None
    return active if active["adapter"]["train_step"] >= min_step else None


def pause_learner(server: Any, http: httpx.Client) -> None:
    """Pause the learner and wait until it is paused, its last candidate recorded."""
    assert http.post("/v1/learner/pause").status_code == 202
    server.wait_for(lambda: http.get("/v1/learner").json()["paused"], 30, "the pause")
    time.sleep(1.0)  # a candidate being evaluated when the pause came is recorded now


# --- the learner's files and processes ---------------------------------------------------


def latest_checkpoint_step(data_dir: Path) -> int | None:
    """The step of the checkpoint a resuming learner loads (``LATEST``, written last)."""
    latest = data_dir / "learner" / "checkpoints" / "LATEST"
    return int(json.loads(latest.read_text())["step"]) if latest.exists() else None


def checkpoint_step(data_dir: Path) -> int:
    """:func:`latest_checkpoint_step`, 0 before the first checkpoint."""
    return latest_checkpoint_step(data_dir) or 0


def launch_learner(
    data_dir: Path,
    database_url: str,
    base_model: str,
    env: Mapping[str, str],
    log: Path,
    *,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``lifelong learner`` on ``data_dir`` and ``database_url`` with ``env`` laid over
    the inherited environment; its stdout and stderr are appended to ``log``.
    ``new_session``: in a process group of its own (to kill it with all its children)."""
    child_env = {
        **os.environ,
        **env,
        "LIFELONG_DATA_DIR": str(data_dir),
        "LIFELONG_DATABASE_URL": database_url,
        "LIFELONG_BASE_MODEL": base_model,
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "server.cli", "learner"],
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
