"""Crash-safe file writes: a directory or file appears complete or not at all."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def is_no_space(exc: BaseException) -> bool:
    """Whether a write failed for want of space on its filesystem: an ``OSError`` ENOSPC
    (or a quota's EDQUOT), or a library's wrapping of one (safetensors reports Rust's
    ``StorageFull``, SQLite "database or disk is full")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "StorageFull", "disk is full"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush every file and folder below ``path`` to disk before it is renamed into place."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def write_dir_atomically(final: Path, fill: Callable[[Path], None], replace: bool = True) -> Path:
    """Create ``final`` by filling a temporary sibling, syncing it and renaming it.

    An existing ``final`` is first renamed aside and deleted only after the new one is in
    place, so at every moment one complete version exists under some name. With
    ``replace=False`` an existing ``final`` is an error (``FileExistsError``) and stays.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if not replace and final.exists():
        raise FileExistsError(f"{final} exists and is never replaced")
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_tree(tmp)
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} exists and is never replaced")
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file, fsync it and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary siblings (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``) that a
    killed process left behind in ``folder``; returns what was removed."""
    stale = [p for p in folder.glob(".*.tmp-*")] + [p for p in folder.glob(".*.old-*")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
