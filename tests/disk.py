"""Filling a (small, mounted for the test) filesystem: see the ``small_filesystem`` fixture."""

from __future__ import annotations

from pathlib import Path


def fill_filesystem(path: Path) -> Path:
    """Write a file in ``path`` until its filesystem has no byte left; returns the file."""
    filler = path / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError:
                continue
    return filler
