"""The learning loop end to end: a real server and supervised learner process.

The builtin preset ``small`` (bootstrapped once per session, about a minute) learns the
synthetic ``sort-l1`` bucket, a skill its bootstrap never saw, through LoRA; the promoted
version's probe accuracy, measured through ``/v1/completions``, must be clearly above the
base model's. A second test SIGKILLs the learner and checks that the supervisor starts
another, with nothing submitted lost.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    LOOP_ENV,
    SORT_BUCKET,
    completions,
    probe_examples,
    promoted,
    submit_sort,
)

pytestmark = pytest.mark.slow


def accuracy(http: httpx.Client, model: str, probes: list[dict[str, Any]]) -> float:
    texts = completions(http, model, [p["prompt"] for p in probes], max_tokens=12)
    return sum(t.strip() == p["target"] for t, p in zip(texts, probes, strict=True)) / len(probes)


def test_promoted_version_beats_base(
    start_server: Any, tmp_path: Path, small_model_dir: str
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'loop.db'}",
        learner=True,
        env={**LOOP_ENV, "LIFELONG_BASE_MODEL": small_model_dir},
    )
    with server.client("admin", timeout=120) as http:
        submit_sort(http)
        probes = probe_examples(http, SORT_BUCKET)
        assert len(probes) >= 20
        active = server.wait_for(
            lambda: promoted(http, min_step=320),
            420,
            "a version promoted after 320 steps",
            interval=2,
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


def test_the_supervisor_restarts_a_killed_learner(start_server: Any, tmp_path: Path) -> None:
    """Supervision only: resuming from a checkpoint after a crash is
    ``test_learner_crashes``, after a SIGTERM ``test_shutdown``."""
    server = start_server(
        f"sqlite:///{tmp_path / 'kill.db'}",
        learner=True,
        data_dir=tmp_path / "data",
        env={**LOOP_ENV, "LIFELONG_LEARNER__CANDIDATE_EVERY": "1000"},
    )
    with server.client("admin") as http:
        submitted = submit_sort(http, n=300)

        def holder_pid() -> int | None:
            state = http.get("/v1/learner").json()
            alive = state["alive"] and state["holder"] and state["status"]
            return int(state["holder"].rsplit(":", 1)[1]) if alive else None

        old_pid = server.wait_for(holder_pid, 240, "a learner holding the lease")
        os.kill(old_pid, signal.SIGKILL)

        # More data arrives while the learner is down: nothing submitted may be lost.
        more = submit_sort(http, n=50, seed=8)
        server.wait_for(
            lambda: (pid := holder_pid()) is not None and pid != old_pid, 120, "a new learner"
        )
        bucket = http.get(f"/v1/buckets/{SORT_BUCKET}").json()
        distinct = {(e["prompt"], e["target"]) for e in submitted + more}
        assert bucket["train_examples"] + bucket["probe_examples"] == len(distinct)
