"""The ``lifelong`` command line (typer): the service itself (``serve``, ``learner``), its
database and files (``keys``, ``db``, ``backup``, ``restore``), its builtin base models
(``builtin``), and a client of a running server (``submit``, ``buckets``, ``teacher``,
``adapters``, ``eval``, ``status``)."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from server.cli import adapters, backup, builtin, local, remote
from server.cli.submit import submit

HELP = """Keep a language model learning from task streams without forgetting.

`serve` runs the service. The client commands talk to it over HTTP: the server is --url
(LIFELONG_URL, default http://127.0.0.1:8000), the key LIFELONG_API_KEY or else the
admin.key in the server's data directory (--data-dir, LIFELONG_DATA_DIR).
"""

app = typer.Typer(
    name="lifelong",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    # Markdown: docstring paragraphs are re-wrapped to the terminal, `code` is shown as such.
    rich_markup_mode="markdown",
    # Tracebacks without local variables: those can hold API keys and database URLs.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("serve", rich_help_panel="Service")(local.serve)
app.command("learner", rich_help_panel="Service")(local.learner)
app.add_typer(local.keys_app, name="keys", rich_help_panel="Service")
app.command("db", rich_help_panel="Service")(local.db)
app.command("backup", rich_help_panel="Service")(backup.backup)
app.command("restore", rich_help_panel="Service")(backup.restore)
app.add_typer(builtin.app, name="builtin", rich_help_panel="Service")

app.command("submit", rich_help_panel="Client")(submit)
app.command("buckets", rich_help_panel="Client")(remote.buckets)
app.command("teacher", rich_help_panel="Client")(remote.teacher)
app.add_typer(adapters.app, name="adapters", rich_help_panel="Client")
app.command("eval", rich_help_panel="Client")(remote.evaluations)
app.command("status", rich_help_panel="Client")(remote.status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv``: the arguments, default ``sys.argv[1:]``); returns
    the exit code (the ``lifelong`` entry point exits with it)."""
    try:
        app(args=None if argv is None else list(argv), prog_name="lifelong")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code)
        return 1
    return 0
