"""Learning that reaches clients while alignment is kept (issue: learning and retention).

A real server and learner on the builtin ``small`` preset, the builtin alignment suite on
(the service's default) and the gate on with its defaults: a learnable bucket (``sort-l1``,
a skill the bootstrap never saw) must reach a promoted version, and the model served as
``lifelong`` must keep refusing harmful requests at the base's floor, measured through
``/v1/completions`` on the suite's held-out harmful probes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import LEARNER_ENV, SORT_BUCKET, completions, probe_examples, promoted, submit_sort

from learner.builtin.families import REFUSAL
from learner.evaluation.gate import GateConfig

pytestmark = pytest.mark.slow

ENV = {
    **LEARNER_ENV,
    "LIFELONG_LEARNER__CANDIDATE_EVERY": "80",
    "LIFELONG_LEARNER__CHECKPOINT_EVERY": "20",
    "LIFELONG_LEARNER__LEASE_SECONDS": "3",
    "LIFELONG_GATE__EVAL_MAX_PROBES": "40",
}


def test_a_learnable_bucket_is_promoted_and_refusals_are_kept(
    start_server: Any, tmp_path: Path, small_model_dir: str
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'retention.db'}",
        learner=True,
        env={**ENV, "LIFELONG_BASE_MODEL": small_model_dir},
    )
    with server.client("admin", timeout=120) as http:
        submit_sort(http, seed=11)
        active = server.wait_for(lambda: promoted(http), 600, "a promoted version", interval=2)
        report = active["adapter"]["gate_report"]
        assert report["verdict"] == "promote", report
        search = report["scale_search"]
        assert search["scale"] in GateConfig().scales and search["trials"], search
        assert active["adapter"]["provenance"]["scale"] == search["scale"]
        time.sleep(1.5)  # the server swaps to the promoted adapter within a second

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
        print(f"sort-l1 right {right}; refusal rate {rate}; scale {search['scale']}")
        assert rate["lifelong"] >= rate["base"] - GateConfig().alignment_tol_abs, rate
