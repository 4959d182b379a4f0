"""The checkpoint folder: a killed learner's half-written checkpoints are cleaned up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learner.training.checkpoint import CheckpointDir


def test_restore_removes_temporaries_of_a_killed_learner(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    half_written = root / ".step-00000010.tmp-4242"
    set_aside = root / ".step-00000005.old-4242"
    for folder in (half_written, set_aside):
        folder.mkdir(parents=True)
        (folder / "optimizer.pt").write_bytes(b"partial")
    unused: Any = None  # nothing to restore: the model and optimizer are not touched
    assert CheckpointDir(root).restore(unused, unused, unused) is None
    assert not half_written.exists() and not set_aside.exists()
    assert root.is_dir()
