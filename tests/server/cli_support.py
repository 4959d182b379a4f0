"""Running the ``lifelong`` CLI in-process against a ``live_api`` server (imported by the
``test_cli_*`` modules; pytest puts this directory on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from server.cli import app

KEYS = {"admin": "test-admin-key", "submit": "test-submit-key", "read": "test-read-key"}
WIDTH = 80  # the terminal the tables must fit


def invoke(
    server: Any,
    *args: str | Path,
    scope: str | None = "admin",
    env: Mapping[str, str | None] | None = None,
    stdin: str | None = None,
) -> Result:
    """``lifelong ARGS`` with the server's URL and the test key of ``scope`` in the
    environment (``scope=None``: no key in the environment)."""
    base: dict[str, str | None] = {
        "LIFELONG_URL": server.url,
        "LIFELONG_API_KEY": KEYS[scope] if scope else None,
        "LIFELONG_DATA_DIR": str(server.data_dir),
        "COLUMNS": str(WIDTH),
    }
    return CliRunner().invoke(app, [str(a) for a in args], env={**base, **(env or {})}, input=stdin)


def run_ok(server: Any, *args: str | Path, **kwargs: Any) -> Result:
    """``invoke``, asserting exit code 0."""
    result = invoke(server, *args, **kwargs)
    assert result.exit_code == 0, describe(result)
    return result


def describe(result: Result) -> str:
    return (
        f"exit code {result.exit_code}\n--- stdout ---\n{result.stdout}\n"
        f"--- stderr ---\n{result.stderr}\nexception: {result.exception!r}"
    )


def widest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def table_rows(output: str) -> list[list[str]]:
    """The cells of every table body row in ``output``, with the lines of a row whose text
    folded over several lines joined again (the continuation lines have an empty first
    cell)."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue  # borders, headers (┃), titles and plain text
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0] or not rows or len(cells) != len(rows[-1]):
            rows.append(cells)
            continue
        for i, cell in enumerate(cells):
            if cell:
                rows[-1][i] = f"{rows[-1][i]} {cell}".strip()
    return rows


def rows_of(output: str, first_cell: str) -> list[list[str]]:
    """The table rows of ``output`` whose first cell is ``first_cell``."""
    return [row for row in table_rows(output) if row[0] == first_cell]
