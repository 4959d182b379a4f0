"""Two servers starting together on an empty database: both come up, one admin key.

Without the setup lock, SQLite failed to create ``alembic_version`` in one of the two
("database is locked") and PostgreSQL minted two admin keys, one of them overwriting the
other's ``admin.key``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from learner.store.db import make_engine
from learner.store.keys import list_keys


def test_two_servers_start_together_on_an_empty_database(
    start_server: Any, tmp_path: Path, empty_db_url: str
) -> None:
    data_dir = tmp_path / "shared-data"

    def start(_: int) -> Any:
        return start_server(empty_db_url, keys={}, data_dir=data_dir)

    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(start, range(2)))  # each waits for its /readyz

    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            keys = list_keys(conn)
    finally:
        engine.dispose()
    assert [(k.scope, k.name) for k in keys] == [("admin", "bootstrap-admin")]
    key = (data_dir / "admin.key").read_text().strip()
    for server in servers:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.get("/v1/buckets", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
