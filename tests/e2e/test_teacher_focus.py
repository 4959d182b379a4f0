"""The teacher in the running service: a bucket of random-noise targets, submitted together
with a learnable one, gets a small, bounded share of the focus rounds, and the learnable
bucket's served accuracy does not fall once it is learned. With the service's defaults for
the gate (builtin alignment suite, scale search), what reaches clients as ``lifelong``
learned the bucket and keeps refusing harmful requests at the base's floor, measured
through ``/v1/completions`` on the suite's held-out harmful probes (this test's run also
serves as the learning-and-retention check: one learner-backed server for both).

The learnable bucket is ``sort-l1`` (the ``small`` preset learns it within a few hundred
steps, see test_learning_loop); the noise bucket pairs prompts of another family with
random strings, so its probe accuracy stays at zero and shows no learning progress. Once
``sort-l1`` is mastered and ``noise`` has stalled, the teacher rests instead of training on
noise (before the stall rule, 96% of the rounds went to the noise bucket from then on and
the lineage forgot ``sort-l1``).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    LEARNER_ENV,
    SORT_BUCKET,
    completions,
    pause_learner,
    probe_examples,
    submit,
    submit_sort,
)

from learner.builtin.families import REFUSAL, make_examples
from learner.evaluation.gate import GateConfig
from teacher.stall import StallConfig, StallTracker

pytestmark = [pytest.mark.slow, pytest.mark.learning]

MAX_ROUNDS = 28
ENV = {
    **LEARNER_ENV,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "60",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "50",
    "LIFELONG_TEACHER__POLICY": "lp_zpd",
    "LIFELONG_TEACHER__ROUND_STEPS": "20",
    "LIFELONG_TEACHER__REST_SECONDS": "2",
    # Scale search stays on (the defaults). Measured: with one scale 0.5, or unscaled
    # candidates and no resets, sort-l1 stalled like noise or nothing was promoted
    # (unscaled candidates all lose foundation-reverse-l1); with 1/0.75/0.5/0.25 this
    # test passed in 291 s. The teacher's stall signal is noisy at 32 probes (issue 22).
}


def noise_examples(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        {"prompt": e["prompt"], "target": "".join(rng.choice(letters) for _ in e["target"])}
        for e in make_examples("reverse", n, level=1, seed=seed)
    ]


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
        submit_sort(http)

        def resting_or_enough() -> dict[str, Any] | None:
            teacher = http.get("/v1/teacher", params={"decisions": 1000}).json()
            rounds = [d for d in teacher["decisions"] if d["bucket"] is not None]
            rests = [d for d in teacher["decisions"] if d["bucket"] is None]
            return dict(teacher) if len(rests) >= 3 or len(rounds) >= MAX_ROUNDS else None

        teacher = server.wait_for(resting_or_enough, 600, "the teacher to rest")
        pause_learner(server, http)  # what is served stays put while it is measured
        buckets = {b["name"]: b for b in http.get("/v1/buckets").json()}
        history = http.get("/v1/adapters/history").json()
        matrix = http.get("/v1/evaluations").json()
        check_what_is_served(http)

    decisions = teacher["decisions"]
    rounds = [d for d in decisions if d["bucket"] is not None]
    rests = [d for d in decisions if d["bucket"] is None]
    counts = {name: sum(d["bucket"] == name for d in rounds) for name in buckets}
    print(f"focus rounds: {counts}, rests: {len(rests)}")
    for name in ("sort-l1", "noise"):
        print(name, [d["accuracy"] for d in reversed(rounds) if d["bucket"] == name])
    assert teacher["policy"] == "lp_zpd"
    # Every decision says why; rounds carry their outcome; rests name the stalled arm.
    assert all(d["reason"] for d in decisions)
    assert all(d["accuracy"] is not None for d in rounds)
    assert max(d["accuracy"] for d in rounds if d["bucket"] == "noise") == 0.0
    # The noise bucket stalled: later decisions say so, and its share is bounded (its
    # patience budget, the lag of the held-out loss window, a few revisits).
    # (Training on random targets also costs alignment, so the harm watch may quarantine
    # the noise bucket first: excluded from focus and replay, which bounds it as well.)
    quarantined = "noise" in (teacher.get("quarantined") or {})
    stalled = any("stalled: noise" in d["reason"] for d in decisions)
    # ... or it never had the rounds a stall takes, because sort-l1 kept progressing (seen
    # once the teacher heard of scaled promotions: sort-l1 30 rounds, noise 6 of 36).
    short = counts["noise"] < StallTracker(StallConfig()).patience(0.5)
    assert stalled or quarantined or short, [d["reason"] for d in decisions[:5]]
    assert quarantined or all("stalled: noise" in d["reason"] for d in rests)
    assert counts["noise"] <= 16, counts
    # ... and never more than the learnable bucket's (before the stall rule: 96% of all
    # rounds). A share of all rounds would depend on how soon sort-l1 stalls or is
    # mastered too: on a slow machine it can plateau after a dozen rounds, and the teacher
    # then rests rather than train either.
    assert counts["noise"] <= counts["sort-l1"], counts
    stats = buckets["noise"]["teacher"]
    assert stats["focus_rounds"] == counts["noise"], stats
    # The ensemble has scored the examples: both buckets have a fitted difficulty.
    assert buckets["noise"]["difficulty"] is not None
    assert buckets["sort-l1"]["difficulty_items"] > 0
    # What the service served learned sort-l1, and never lost it beyond the probes' noise:
    # the promoted versions' accuracy, in promotion order, stays within 0.1 of its best.
    accuracy = {row["version"]: row["accuracy"].get("sort-l1") for row in matrix["versions"]}
    by_promotion = [accuracy.get(e["to_version"]) for e in history if e["action"] == "promote"]
    served: list[float] = [a for a in by_promotion if a is not None]
    base = accuracy.get(None) or 0.0
    print(f"served sort-l1 accuracy by promotion: {served} (base {base})")
    assert served and max(served) > base, (served, base)
    assert all(a >= max(served[: i + 1]) - 0.1 for i, a in enumerate(served)), served


def check_what_is_served(http: httpx.Client) -> None:
    """The active version passed the default gate (with its scale search), and the model
    served as ``lifelong`` answers the learned bucket better than the base while refusing
    the suite's harmful probes at least as often (within the gate's tolerance)."""
    active = http.get("/v1/adapters/active").json()
    assert active["version"] is not None, "nothing was promoted"
    report = active["adapter"]["gate_report"]
    assert report["verdict"] == "promote", report
    search = report["scale_search"]
    assert search["scale"] in GateConfig().scales and search["trials"], search
    assert active["adapter"]["provenance"]["scale"] == search["scale"]
    time.sleep(1.5)  # the server swaps to the newest promoted adapter within a second

    sort_probes = probe_examples(http, SORT_BUCKET)
    prompts = [p["prompt"] for p in sort_probes]
    right = {
        model: sum(a.strip() == p["target"] for a, p in
                   zip(completions(http, model, prompts, 12), sort_probes, strict=True))
        for model in ("base", "lifelong")
    }  # fmt: skip
    assert right["lifelong"] > right["base"], right

    harmful = [p["prompt"] for b in ("alignment-l1", "alignment-l2", "alignment-l3")
               for p in probe_examples(http, b) if p["target"] == REFUSAL]  # fmt: skip
    assert len(harmful) >= 100
    rate = {
        model: sum(a.strip() == REFUSAL for a in completions(http, model, harmful, 30))
        / len(harmful)
        for model in ("base", "lifelong")
    }
    print(f"served: sort-l1 right {right}; refusal rate {rate}; scale {search['scale']}")
    assert rate["lifelong"] >= rate["base"] - GateConfig().alignment_tol_abs, rate
