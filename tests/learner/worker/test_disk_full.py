"""A learner whose data dir's disk is full: candidates and checkpoints that cannot be
written leave nothing servable and nothing half-written, training goes on, and once space
returns the next candidate and checkpoint are saved (a real micro model on a tmpfs)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from disk import fill_filesystem
from sqlalchemy import Engine

from learner.builtin.families import make_examples
from learner.config import LearnerConfig, LoraSettings
from learner.model import registry
from learner.store import registry as registry_rows
from learner.store.db import write_transaction
from learner.store.ingest import NewExample, ingest_batch
from learner.training.checkpoint import CheckpointDir
from learner.worker import Learner

CONFIG = LearnerConfig(
    lora=LoraSettings(r=4, alpha=8), batch_size=8, candidate_every=4, checkpoint_every=2,
    poll_seconds=0.05, max_new_tokens=8, device="cpu",
)  # fmt: skip


def train_to(learner: Learner, step: int) -> None:
    for _ in range(200):
        if learner.state.step >= step:
            return
        learner.tick()
    raise AssertionError(f"stuck at step {learner.state.step}")


def leftovers(root: Path) -> list[Path]:
    """Temporaries of writes in progress (``.name.tmp-PID``) anywhere below ``root``."""
    return [p for p in root.rglob(".*") if ".tmp-" in p.name]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_full_disk_skips_saves_and_training_goes_on(
    engine: Engine, small_filesystem: Path, micro_model_dir: Path
) -> None:
    examples = [NewExample(e["prompt"], e["target"]) for e in make_examples("copy", 60, 1, 0)]
    with write_transaction(engine) as conn:
        ingest_batch(conn, "copy-l1", examples)
    data_dir = small_filesystem / "data"
    learner = Learner(engine, CONFIG, data_dir, micro_model_dir, str(micro_model_dir),
                      holder="disk-full")  # fmt: skip
    assert learner.wait_for_lease(threading.Event())
    learner.setup()
    try:
        filler = fill_filesystem(small_filesystem)
        train_to(learner, 8)  # two candidates and four checkpoints due, none can be written
        with engine.connect() as conn:
            versions = registry.list_versions(conn)
        assert [v.status for v in versions] == ["retired", "retired"]
        assert all(v.gate_report["verdict"] == "abandoned" for v in versions)
        with engine.connect() as conn:
            assert registry_rows.active_version(conn) is None  # nothing half-saved is served
        assert not list((data_dir / "adapters").glob("v*")) and not leftovers(data_dir)
        assert CheckpointDir(data_dir / "learner" / "checkpoints").latest() is None

        filler.unlink()  # space returns
        train_to(learner, 12)
        with engine.connect() as conn:
            newest = registry.list_versions(conn)[-1]
        assert newest.train_step == 12 and newest.status in ("candidate", "promoted", "rejected")
        assert newest.gate_report is not None  # saved and judged
        path = registry.resolve_path(data_dir, newest.path)
        assert registry.sha256_file(path / registry.ADAPTER_WEIGHTS) == newest.sha256
        assert CheckpointDir(data_dir / "learner" / "checkpoints").latest() is not None
    finally:
        learner.parts.close()
        learner.lease.release()
