"""Option groups (``server.cli.groups``): a group parameter becomes the group's options in
its place, a default instance sets their defaults, and the command gets the group back."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from server.cli.groups import with_groups
from server.cli.options import Server

Width = Annotated[int, typer.Option("--width", help="How wide.")]
Tall = Annotated[bool, typer.Option("--tall", help="Whether tall.")]


@dataclass(frozen=True)
class Shape:
    width: Width = 3
    tall: Tall = False


WIDE = Shape(width=9)


def test_group_spreads_in_place_and_comes_back_built() -> None:
    seen: list[tuple[str, Shape]] = []

    @with_groups
    def draw(name: str, shape: Shape = WIDE, *, colour: str = "red") -> None:
        seen.append((name + colour, shape))

    params = inspect.signature(draw).parameters
    assert list(params) == ["name", "width", "tall", "colour"]
    assert params["width"].default == 9 and params["tall"].default is False

    app = typer.Typer()
    app.command()(draw)
    result = CliRunner().invoke(app, ["box", "--tall", "--colour", "blue"])
    assert result.exit_code == 0, result.output
    assert seen == [("boxblue", Shape(width=9, tall=True))]


def test_group_names_must_not_clash() -> None:
    def clash(width: int, shape: Shape) -> None: ...

    with pytest.raises(TypeError, match="repeats a parameter name"):
        with_groups(clash)


def test_client_commands_keep_their_timeouts() -> None:
    from server.cli.remote import status
    from server.cli.submit import submit

    assert Server().timeout == 30.0
    assert inspect.signature(status).parameters["timeout"].default == 10.0
    assert inspect.signature(submit).parameters["timeout"].default == 60.0
