"""Helpers shared by the benchmarks: a throwaway database and a description of the machine."""

from __future__ import annotations

import os
import platform
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def fresh_database_url(backend: str, work_dir: Path, postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database for one run: a SQLite file in ``work_dir``, or a
    PostgreSQL database created beside ``postgres_url``'s and dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{work_dir / f'bench-{secrets.token_hex(4)}.db'}"
        return
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"lifelong_bench_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def machine(**extra: Any) -> dict[str, Any]:
    """CPU, core count, platform and load: printed with every result."""
    cpu = platform.processor() or ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        **extra,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
