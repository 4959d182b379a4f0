"""The learning loop end to end: a real server and supervised learner process.

The builtin preset ``small`` (bootstrapped once per session, about a minute) learns the
synthetic ``sort-l1`` bucket, a skill its bootstrap never saw, through LoRA; the promoted
version's probe accuracy, measured through ``/v1/completions``, must be clearly above the
base model's. A second test SIGKILLs the
learner mid-training and checks that the supervisor restarts it from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from learner.builtin.families import make_examples

pytestmark = pytest.mark.slow

BUCKET = "sort-l1"
FAMILY, LEVEL = "sort", 1
LEARNER_ENV = {
    "LIFELONG_LEARNER__BATCH_SIZE": "16",
    "LIFELONG_LEARNER__LEARNING_RATE": "0.003",
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "80",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "10",
    "LIFELONG_GATE__EVAL_MAX_PROBES": "40",
    "LIFELONG_LEARNER__POLL_SECONDS": "0.2",
    "LIFELONG_LEARNER__LEASE_SECONDS": "3",
    "LIFELONG_LEARNER__DEVICE": "cpu",
    # This test is about the loop (train, version, gate on gain, serve the promoted version).
    # With the builtin alignment suite the small model cannot learn sort-l1 by +0.2 without
    # losing refusals, and the gate rightly rejects those candidates: tests/e2e/
    # test_poisoning.py covers the suite, the README the drift.
    "LIFELONG_ALIGNMENT_SUITE": "false",
    # Scale search multiplies the candidates' judging time; it has its own tests
    # (tests/learner/worker/test_scale_search.py, tests/e2e/test_learning_retention.py).
    "LIFELONG_GATE__SCALES": "1",
}


def submit_bucket(http: httpx.Client, n: int = 400) -> list[dict[str, str]]:
    examples = make_examples(FAMILY, n, level=LEVEL, seed=7)
    response = http.post("/v1/tasks", json={"bucket": BUCKET, "examples": examples})
    assert response.status_code == 202, response.text
    return examples


def probe_examples(http: httpx.Client) -> list[dict[str, Any]]:
    page = http.get(f"/v1/buckets/{BUCKET}/examples", params={"split": "probe", "limit": 1000})
    assert page.status_code == 200, page.text
    return list(page.json()["examples"])


def accuracy(http: httpx.Client, model: str, probes: list[dict[str, Any]]) -> float:
    response = http.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": [p["prompt"] for p in probes],
            "max_tokens": 12,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    texts = [c["text"] for c in response.json()["choices"]]
    return sum(t.strip() == p["target"] for t, p in zip(texts, probes, strict=True)) / len(probes)


def test_promoted_version_beats_base(
    start_server: Any, tmp_path: Path, small_model_dir: str
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'loop.db'}",
        learner=True,
        env={**LEARNER_ENV, "LIFELONG_BASE_MODEL": small_model_dir},
    )
    with server.client("admin", timeout=120) as http:
        submit_bucket(http)
        probes = probe_examples(http)
        assert len(probes) >= 20

        def promoted_after_training() -> Any:
            active = http.get("/v1/adapters/active").json()
            trained = active["version"] is not None and active["adapter"]["train_step"] >= 320
            return active if trained else None

        active = server.wait_for(
            promoted_after_training, 420, "a version promoted after 320 steps", interval=2
        )
        report = active["adapter"]["gate_report"]
        assert report["verdict"] == "promote", report
        gain = next(c for c in report["checks"] if c["kind"] == "gain")
        assert gain["passed"] and gain["value"] > 0, report

        # The server swaps to the promoted adapter by itself within a second.
        time.sleep(1.5)
        base = accuracy(http, "base", probes)
        learned = accuracy(http, "lifelong", probes)
        pinned = accuracy(http, f"lifelong@{active['version']}", probes)
        print(f"probe accuracy over {len(probes)} probes: base {base:.3f}, learned {learned:.3f}")
        assert learned == pinned
        assert learned >= base + 0.2, (base, learned)

        models = {m["id"] for m in http.get("/v1/models").json()["data"]}
        assert {"lifelong", "base", f"lifelong@{active['version']}"} <= models
        chat = http.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": probes[0]["prompt"]}],
                "temperature": 0,
                "max_tokens": 12,
            },
        )
        assert (
            chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
        )


def checkpoint_step(data_dir: Path) -> int:
    latest = data_dir / "learner" / "checkpoints" / "LATEST"
    return int(json.loads(latest.read_text())["step"]) if latest.exists() else 0


def test_learner_killed_mid_training_resumes(start_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(
        f"sqlite:///{tmp_path / 'kill.db'}",
        learner=True,
        data_dir=data_dir,
        env={**LEARNER_ENV, "LIFELONG_LEARNER__CANDIDATE_EVERY": "1000"},
    )
    with server.client("admin") as http:
        submitted = submit_bucket(http, n=300)
        server.wait_for(lambda: checkpoint_step(data_dir) >= 20, 240, "a checkpoint at step >= 20")
        learner = http.get("/v1/learner").json()
        old_pid = int(learner["holder"].rsplit(":", 1)[1])
        saved_step = checkpoint_step(data_dir)
        os.kill(old_pid, signal.SIGKILL)

        # More data arrives while the learner is down: nothing submitted may be lost.
        more = make_examples(FAMILY, 50, level=LEVEL, seed=8)
        assert http.post("/v1/tasks", json={"bucket": BUCKET, "examples": more}).status_code == 202

        def restarted() -> Any:
            state = http.get("/v1/learner").json()
            holder = state["holder"] or ""
            if state["alive"] and not holder.endswith(f":{old_pid}") and state["status"]:
                return state
            return None

        state = server.wait_for(restarted, 120, "the restarted learner")
        assert state["status"]["step"] >= saved_step, (state, saved_step)
        assert "resumed from checkpoint" in server.stderr() + server.stdout()

        bucket = http.get(f"/v1/buckets/{BUCKET}").json()
        distinct = {(e["prompt"], e["target"]) for e in submitted + more}
        assert bucket["train_examples"] + bucket["probe_examples"] == len(distinct)
