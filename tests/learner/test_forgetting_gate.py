"""The gate rejects a candidate that forgets a learned bucket, even though it learned another.

The builtin ``small`` preset learns bucket A (``copy`` prompts answered with a "!"
appended) and that version is promoted. Then it trains only on bucket B: the same prompts
with other answers, which interferes with A directly. The next candidate improves B, but
A's probe accuracy falls far beyond ``max_forgetting``: it must be rejected, with a report
that names A.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from learner.builtin.families import make_examples
from learner.config import LearnerConfig, TeacherConfig
from learner.evaluation.gate import GateConfig
from learner.model import registry
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket
from learner.worker import Learner

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]
# Phase one's length: 80 steps gave +0.21 on A here, 120 steps +0.45 (the promotion the
# test relies on needs a clear margin).
STEPS = 120


# The unscaled candidate only: a smaller scale interpolates towards the active version and
# may keep A well enough to pass (tests/learner/worker/test_scale_search.py covers that).
GATE = GateConfig(scales=(1.0,))


def _learner(engine: Engine, data_dir: Path, model_dir: str, max_steps: int) -> Learner:
    config = LearnerConfig(
        batch_size=16,
        candidate_every=STEPS,
        checkpoint_every=STEPS,
        focus_share=1.0,  # only the focus bucket: nothing else rehearses A in phase two
        anchor_share=0.0,
        poll_seconds=0.05,
        device="cpu",
        max_steps=max_steps,
    )
    teacher = TeacherConfig(round_steps=10, watch_probes=0)
    return Learner(engine, config, data_dir, Path(model_dir), "builtin:small",
                   holder="forgetting-test", teacher=teacher, gate=GATE)  # fmt: skip


def test_a_candidate_that_forgets_a_learned_bucket_is_rejected(
    engine: Engine, tmp_path: Path, small_model_dir: str
) -> None:
    examples = make_examples("copy", 400, level=1, seed=3)
    # A: copy with a "!" appended. No base model answers that, whatever it learned of copy
    # (plain copy-l1 was 0.03 under the small model built here and 0.47 under one built on
    # a 16-core machine, where 120 steps on A only lowered it): the test needs a bucket the
    # base cannot do and the learner can learn.
    with write_transaction(engine) as conn:
        learnable = [NewExample(e["prompt"], e["target"] + "!") for e in examples]
        ingest_batch(conn, "A", learnable)
    _learner(engine, tmp_path, small_model_dir, STEPS).run()
    with engine.connect() as conn:
        (learned,) = registry.list_versions(conn)
    assert learned.status == "promoted", learned.gate_report

    with write_transaction(engine) as conn:
        conn.execute(update(Bucket).where(Bucket.name == "A").values(status="paused"))
        # B: A's prompts with another answer (the word reversed, plus "x").
        interfering = [NewExample(e["prompt"], e["target"][::-1] + "x") for e in examples]
        ingest_batch(conn, "B", interfering)
    _learner(engine, tmp_path, small_model_dir, 2 * STEPS).run()

    with engine.connect() as conn:
        candidate = registry.get_version(conn, 2)
    assert candidate is not None and candidate.parent_version == learned.version
    report = candidate.gate_report
    assert candidate.status == "rejected" and report is not None
    checks = {c["name"]: c for c in report["checks"]}
    forgetting_a = checks["forgetting A"]
    assert not forgetting_a["passed"]
    assert forgetting_a["value"] > GateConfig().max_forgetting
    assert "bucket A lost" in report["summary"]
    gain = checks["gain"]  # B improved: the rejection is about A alone
    assert gain["passed"] and gain["value"] > 0, gain["message"]
    # Only A's loss fails the candidate: its forgetting and, where A's drop is large, the
    # negative flips (A's probes are the only ones the active version got right).
    failing = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "forgetting A" in failing and failing <= {"forgetting A", "nfr"}, failing
