"""Learner checkpoints: adapter, optimizer and loop state, written atomically together.

Layout under ``<data_dir>/learner/checkpoints``::

    step-000120/   adapter (peft format), optimizer.pt, state.json
    LATEST         {"step": 120, "dir": "step-000120"}, replaced atomically after the dir

A killed learner finds the newest complete checkpoint through LATEST; a directory without
a LATEST entry pointing at it is an unfinished write and is ignored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights

from learner.fsutil import remove_stale_temporaries, write_dir_atomically, write_json_atomically

#: Checkpoints kept by default (RetentionConfig.keep_checkpoints): the newest and one
#: before it, in case the newest turns out unreadable.
KEEP_CHECKPOINTS = 2


class CheckpointDir:
    """The checkpoints folder of one learner (one per data directory)."""

    def __init__(self, root: Path, keep: int = KEEP_CHECKPOINTS) -> None:
        self.root, self.keep = root, keep

    @property
    def latest_file(self) -> Path:
        return self.root / "LATEST"

    def save(
        self, model: PeftModel, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> Path:
        step = int(state["step"])
        name = f"step-{step:08d}"

        def fill(tmp: Path) -> None:
            model.save_pretrained(str(tmp))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))

        path = write_dir_atomically(self.root / name, fill)
        write_json_atomically(self.latest_file, {"step": step, "dir": name})
        self._prune(keep=name)
        return path

    def _prune(self, keep: str) -> None:
        done = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        for old in done[: -self.keep]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: LATEST's, else the newest whole ``step-*``."""
        if self.latest_file.exists():
            path = self.root / json.loads(self.latest_file.read_text())["dir"]
            if (path / "state.json").exists():
                return path
        complete = sorted(p for p in self.root.glob("step-*") if (p / "state.json").exists())
        return complete[-1] if complete else None

    def restore(
        self, model: PeftModel, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> dict[str, Any] | None:
        """Load the newest checkpoint into ``model``/``optimizer``; return its loop state.

        Called by the lease holder only, so the temporaries of a killed learner (half-
        written checkpoints) can be removed here: no live process is writing them."""
        if self.root.is_dir():
            remove_stale_temporaries(self.root)
        path = self.latest()
        if path is None:
            return None
        weights = load_peft_weights(str(path), device=str(device))
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
        state: dict[str, Any] = json.loads((path / "state.json").read_text())
        return state
