"""The teacher in the running service: a bucket of random-noise targets, submitted together
with a learnable one, gets a clearly smaller share of the focus rounds.

The learnable bucket is ``sort-l1`` (the ``small`` preset learns it within a few hundred
steps, see test_learning_loop); the noise bucket pairs prompts of another family with
random strings, so its probe accuracy stays at zero and shows no learning progress.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from learner.tasks import make_examples

pytestmark = pytest.mark.slow

ROUNDS = 24
ENV = {
    "LIFELONG_LEARNER__BATCH_SIZE": "16",
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "100000",  # this test is about focus, not versions
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "50",
    "LIFELONG_LEARNER__POLL_SECONDS": "0.2",
    "LIFELONG_LEARNER__LEASE_SECONDS": "5",
    "LIFELONG_LEARNER__DEVICE": "cpu",
    "LIFELONG_TEACHER__POLICY": "lp_zpd",
    "LIFELONG_TEACHER__ROUND_STEPS": "10",
}


def noise_examples(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        {"prompt": e["prompt"], "target": "".join(rng.choice(letters) for _ in e["target"])}
        for e in make_examples("reverse", n, level=1, seed=seed)
    ]


def submit(http: httpx.Client, bucket: str, examples: list[dict[str, str]]) -> None:
    response = http.post("/v1/tasks", json={"bucket": bucket, "examples": examples})
    assert response.status_code == 202, response.text


def test_noise_bucket_gets_a_smaller_focus_share(
    start_server: Any, tmp_path: Path, small_model_dir: str
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'teacher.db'}",
        learner=True,
        env={**ENV, "LIFELONG_BASE_MODEL": small_model_dir},
    )
    with server.client("admin", timeout=60) as http:
        submit(http, "noise", noise_examples(400, seed=8))
        submit(http, "sort-l1", make_examples("sort", 400, level=1, seed=7))

        def enough_rounds() -> dict[str, Any] | None:
            teacher = http.get("/v1/teacher", params={"decisions": 1000}).json()
            return dict(teacher) if len(teacher["decisions"]) >= ROUNDS else None

        teacher = server.wait_for(enough_rounds, 480, f"{ROUNDS} teacher rounds")
        buckets = {b["name"]: b for b in http.get("/v1/buckets").json()}

    decisions = teacher["decisions"]
    counts = {name: sum(d["bucket"] == name for d in decisions) for name in buckets}
    print(f"focus rounds over {len(decisions)} rounds: {counts}")
    assert teacher["policy"] == "lp_zpd"
    # Every decision scores both arms and says why; finished rounds carry their outcome.
    assert all(set(d["scores"]) == {"noise", "sort-l1"} and d["reason"] for d in decisions)
    assert all(d["accuracy"] is not None for d in decisions)
    assert max(d["accuracy"] for d in decisions if d["bucket"] == "noise") == 0.0
    # The noise bucket gets clearly less focus than the learnable one.
    assert counts["noise"] * 2 < counts["sort-l1"], counts
    stats = buckets["noise"]["teacher"]
    assert stats["focus_rounds"] >= counts["noise"] and stats["focus_share"] < 0.35, stats
    # The ensemble has scored the examples: both buckets have a fitted difficulty.
    assert buckets["noise"]["difficulty"] is not None
    assert buckets["sort-l1"]["difficulty_items"] > 0
