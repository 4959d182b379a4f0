"""The gate rejects a candidate that forgets a learned bucket, even though it learned another.

The builtin ``small`` preset learns bucket A (``copy`` prompts) and that version is
promoted. Then it trains only on bucket B: the same prompts with other answers, which
interferes with A directly. The next candidate improves B, but A's probe accuracy falls
far beyond ``max_forgetting``: it must be rejected, with a report that names A.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from learner import registry
from learner.config import LearnerConfig, TeacherConfig
from learner.evaluation.gate import GateConfig
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import Bucket
from learner.tasks import make_examples
from learner.worker import Learner

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]
STEPS = 80


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
                   holder="forgetting-test", teacher=teacher, gate=GateConfig())  # fmt: skip


def test_a_candidate_that_forgets_a_learned_bucket_is_rejected(
    engine: Engine, tmp_path: Path, small_model_dir: str
) -> None:
    examples = make_examples("copy", 400, level=1, seed=3)
    with write_transaction(engine) as conn:
        ingest_batch(conn, "A", [NewExample(e["prompt"], e["target"]) for e in examples])
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
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["forgetting A"]
