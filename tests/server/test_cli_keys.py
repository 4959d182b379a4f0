"""``lifelong keys create|list|revoke`` and ``db upgrade`` (they work on the database
directly; there is no HTTP API for keys) and the keys they make against a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_support import describe, invoke, run_ok
from typer.testing import CliRunner, Result

from server.cli import app, main


def local(db_url: str, data_dir: Path, *args: str) -> Result:
    """A local command on the test database (no server URL or key in the environment)."""
    argv = [*args, "--database-url", db_url, "--data-dir", str(data_dir)]
    env = {"LIFELONG_API_KEYS": None, "LIFELONG_DATABASE_URL": None, "COLUMNS": "80"}
    return CliRunner().invoke(app, argv, env=env)


def test_create_list_revoke(start_live_api: Any, db_url: str, data_dir: Path) -> None:
    server = start_live_api(auth_cache_seconds=0, auth_miss_cache_seconds=0)
    created = local(db_url, data_dir, "keys", "create", "--scope", "read", "--name", "ops")
    assert created.exit_code == 0, describe(created)
    key = created.stdout.strip()
    assert len(key) > 20 and "\n" not in key

    listed = local(db_url, data_dir, "keys", "list")
    assert listed.exit_code == 0, describe(listed)
    [line] = listed.stdout.splitlines()
    key_id, scope, name, _created, state = line.split("\t")
    assert (scope, name, state) == ("read", "ops", "active")
    assert key not in listed.stdout  # only the hash is stored

    with_key = {"LIFELONG_API_KEY": key}
    run_ok(server, "buckets", scope=None, env=with_key)
    denied = invoke(server, "adapters", "promote", "1", scope=None, env=with_key)
    assert denied.exit_code == 1 and "(403)" in denied.stderr, describe(denied)

    revoked = local(db_url, data_dir, "keys", "revoke", key_id)
    assert revoked.exit_code == 0 and revoked.stdout.strip() == f"revoked key {key_id}"
    refused = invoke(server, "buckets", scope=None, env=with_key)
    assert refused.exit_code == 1 and "(401)" in refused.stderr, describe(refused)
    again = local(db_url, data_dir, "keys", "revoke", key_id)
    assert again.exit_code == 1 and f"no active key with id {key_id}" in again.stderr

    rows = json.loads(local(db_url, data_dir, "keys", "list", "--json").stdout)
    assert rows[0]["name"] == "ops" and rows[0]["revoked_at"] is not None


def test_bad_scope_and_db_upgrade(db_url: str, data_dir: Path) -> None:
    bad = local(db_url, data_dir, "keys", "create", "--scope", "root")
    assert bad.exit_code == 2 and "root" in bad.stderr
    upgraded = local(db_url, data_dir, "db", "upgrade")
    assert upgraded.exit_code == 0, describe(upgraded)
    assert upgraded.stdout.strip() == "database is at the newest schema revision"


def test_main_returns_the_exit_code(db_url: str, data_dir: Path, capsys: Any) -> None:
    """The ``lifelong`` entry point: ``main`` returns the code instead of exiting."""
    common = ["--database-url", db_url, "--data-dir", str(data_dir)]
    assert main(["db", *common, "upgrade"]) == 0  # options before the argument, as before
    assert main(["keys", "revoke", "12345", *common]) == 1
    assert "no active key with id 12345" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
