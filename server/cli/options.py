"""Options shared by the commands, as option groups (see :mod:`server.cli.groups`):
:class:`Server` for the commands that talk to a running server, :class:`Database` and
:class:`Logging` for those that run the service or open its database themselves."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from sqlalchemy import Engine

from server.cli.client import DEFAULT_DATA_DIR, DEFAULT_URL, ApiClient, CliError, Target
from server.cli.groups import with_groups
from server.cli.render import print_json, say
from server.observability.logs import LOG_JSON_ENV, LOG_LEVEL_ENV, configure_logging
from server.process.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

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


@dataclass(frozen=True)
class Server:
    """``--url``, ``--data-dir`` (for the key), ``--timeout`` and ``--json``: the options
    of every command that talks to a running server."""

    url: Url = DEFAULT_URL
    data_dir: KeyDir = DEFAULT_DATA_DIR
    timeout: Timeout = 30.0
    as_json: Json = False

    @property
    def target(self) -> Target:
        return Target(self.url, self.data_dir, self.timeout)

    def connect(self) -> ApiClient:
        """A client for the server, with the key found for the data directory."""
        return ApiClient(self.target)

    def get(self, path: str, **params: Any) -> Any:
        """``GET path`` on a connection of its own: the JSON body."""
        with self.connect() as client:
            return client.get(path, **params)

    def post(self, path: str, body: Any = None) -> Any:
        """``POST path`` on a connection of its own: the JSON body."""
        with self.connect() as client:
            return client.post(path, body)

    def output(self, body: Any, render: Callable[[Any], None], empty: str = "") -> None:
        """Print an answer: the raw JSON under --json, else ``empty`` (when given) for an
        empty ``body``, else what ``render`` makes of it."""
        if self.as_json:
            print_json(body)
        elif empty and not body:
            say(empty)
        else:
            render(body)


def client_command(command: Callable[..., R]) -> Callable[..., R]:
    """A command that talks to the server: its :class:`Server` parameter spread into the
    options, and a :class:`CliError` shown as one line."""
    return reports_errors(with_groups(command))


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
LogJson = Annotated[
    bool,
    typer.Option(
        "--log-json",
        envvar=LOG_JSON_ENV,
        help=f"Log JSON lines (time, level, logger, message, extra fields) instead of text "
        f"({LOG_JSON_ENV}).",
    ),
]
LogLevel = Annotated[
    Level,
    typer.Option(
        "--log-level",
        envvar=LOG_LEVEL_ENV,
        case_sensitive=False,
        help=f"Lowest level logged ({LOG_LEVEL_ENV}).",
    ),
]


@dataclass(frozen=True)
class Database:
    """``--data-dir`` and ``--database-url``: where the local commands find the database
    (unset, the environment's settings decide)."""

    data_dir: DataDir = None
    database_url: DatabaseUrl = None

    def settings(self, **flags: Any) -> Settings:
        """Environment settings with these and the other flags that were given (not None)
        laid over them."""
        given = {"data_dir": self.data_dir, "database_url": self.database_url, **flags}
        return Settings(**{name: value for name, value in given.items() if value is not None})

    def open(self) -> Engine:
        """The configured database, migrated to the newest schema."""
        from learner.store.db import make_engine, upgrade

        engine = make_engine(self.settings().resolved_database_url())
        upgrade(engine)
        return engine


@dataclass(frozen=True)
class Logging:
    """``--log-json`` and ``--log-level``: how the processes of the service log."""

    log_json: LogJson = False
    log_level: LogLevel = "INFO"

    def configure(self, component: str) -> None:
        configure_logging(self.log_json, self.log_level, component=component)
