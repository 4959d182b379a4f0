"""Output of the CLI: rich tables that fold long text to the terminal's width, plain JSON
for ``--json``, and the formatting of numbers and times.

Text from the server (bucket names, reasons) goes into :class:`rich.text.Text` cells, never
through console markup, so that brackets in it (``examples[3]``) are shown as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

MISSING = "-"


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), made at call time so that redirected
    streams (tests, pipes) are honoured; colours only on a terminal."""
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    """Raw JSON for scripts: indented, UTF-8, nothing else on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def say(message: str, style: str | None = None, stderr: bool = False) -> None:
    """One message (never parsed as markup; long ones are left to the terminal to wrap,
    so that they can be searched and copied whole)."""
    console(stderr).print(Text(message, style=style or ""), soft_wrap=True)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    header: bool = True,
) -> Table:
    """A table that fits the terminal: text columns fold (long reasons wrap inside their
    cell), number columns stay on one line.

    A column named with a trailing ``>`` is right-aligned (numbers); the marker is dropped.
    """
    out = Table(title=title, title_justify="left", show_header=header)
    for name in columns:
        numeric = name.endswith(">")
        out.add_column(
            name.rstrip(">"),
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=numeric,
        )
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
    return out


def show(*renderables: Any) -> None:
    out = console()
    for item in renderables:
        out.print(item)


def pct(value: float | None) -> str:
    """An accuracy or share as a percentage."""
    return MISSING if value is None else f"{100 * value:.1f}%"


def num(value: float | int | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def when(value: str | None) -> str:
    """An RFC 3339 time from the API (always UTC) as ``YYYY-MM-DD HH:MM:SS``."""
    if not value:
        return MISSING
    return value.replace("T", " ")[:19]


def version_name(version: int | None) -> str:
    """``v3``, or ``base`` for the base model."""
    return "base" if version is None else f"v{version}"


def text(value: Any, style: str = "") -> Text:
    """A cell that shows ``value`` literally (``-`` for None)."""
    return Text(MISSING if value is None else str(value), style=style)
