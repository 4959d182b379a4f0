"""Options shared by the commands, and the handler that turns a :class:`CliError` into a
message on stderr and exit code 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from server.cli.client import DEFAULT_DATA_DIR, DEFAULT_URL, ApiClient, CliError, Target
from server.cli.render import say

P = ParamSpec("P")
R = TypeVar("R")

# --- the remote commands -----------------------------------------------------------------

Url = Annotated[
    str,
    typer.Option(
        "--url", envvar="LIFELONG_URL", help="Base URL of the lifelong server.", show_default=True
    ),
]
KeyDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="LIFELONG_DATA_DIR",
        help="The server's data directory, whose admin.key is used when LIFELONG_API_KEY "
        "is not set.",
    ),
]
Timeout = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")
]
Json = Annotated[bool, typer.Option("--json", help="Print the server's raw JSON instead.")]

# --- the local commands (they open the database themselves) ------------------------------

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (LIFELONG_DATA_DIR; default ./lifelong-data).",
        show_default=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (LIFELONG_DATABASE_URL; default a SQLite file in the data directory).",
        show_default=False,
    ),
]

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "DataDir",
    "DatabaseUrl",
    "Json",
    "KeyDir",
    "Timeout",
    "Url",
    "connect",
    "reports_errors",
]


def connect(url: str, data_dir: Path, timeout: float = 30.0) -> ApiClient:
    """A client for the server at ``url`` with the key found for ``data_dir``."""
    return ApiClient(Target(url, data_dir, timeout))


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Show a :class:`CliError` as ``lifelong: error: ...`` on stderr and exit with 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            say(f"lifelong: error: {exc}", style="red", stderr=True)
            raise typer.Exit(1) from None

    return run
