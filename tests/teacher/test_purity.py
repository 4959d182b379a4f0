"""The teacher package must import without torch, SQL or HTTP libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = (
    "import sys; import teacher, teacher.policies, teacher.irt, teacher.progress; "
    "bad = [m for m in ('torch', 'sqlalchemy', 'httpx', 'fastapi', 'learner', 'server') "
    "if m in sys.modules]; assert not bad, bad"
)


def test_import_teacher_without_torch() -> None:
    subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, check=True)
