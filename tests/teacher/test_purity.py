"""The teacher package must import without torch, SQL or HTTP libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "sqlalchemy", "httpx", "fastapi", "learner", "server")
# In a fresh interpreter: import every module of the package (found by pkgutil, so a new
# module is covered without editing this list), then print what was imported and which of
# the forbidden top-level packages came with it.
CHECK = f"""
import importlib, json, pkgutil, sys
import teacher
found = sorted(m.name for m in pkgutil.walk_packages(teacher.__path__, "teacher."))
for name in found:
    importlib.import_module(name)
bad = [m for m in {FORBIDDEN!r} if m in sys.modules]
print(json.dumps({{"modules": found, "forbidden": bad}}))
"""


def test_every_teacher_module_imports_without_torch_sql_or_http() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, check=True, capture_output=True, text=True
    )
    report = json.loads(done.stdout)
    assert report["forbidden"] == []
    # pkgutil saw every module on disk (harm.py included), so none escaped the check.
    on_disk: set[str] = set()
    for path in (ROOT / "teacher").rglob("*.py"):
        parts = path.relative_to(ROOT / "teacher").with_suffix("").parts
        if parts[-1] == "__init__":  # a subpackage is listed by its own name
            parts = parts[:-1]
        if parts:
            on_disk.add(".".join(("teacher", *parts)))
    assert "teacher.harm" in on_disk
    assert set(report["modules"]) == on_disk
