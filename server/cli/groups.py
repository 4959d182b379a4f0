"""Option groups: options that several commands take, declared once as a dataclass and
handed to each command as one object.

A command names a group as a parameter (``server: Server``); :func:`with_groups` puts the
group's fields in that parameter's place in the signature typer reads, so that every command
gets the same flags, in the same place among its own, with the same help and defaults, and
builds the group from the values typer parsed. A parameter's default, if given, is an
instance of the group whose field values become the options' defaults (``Server(timeout=10)``
for a command that should give up sooner).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


def with_groups(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with every option-group parameter spread into the group's options."""
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, tuple[type[Any], list[str]]] = {}  # parameter -> (group, its fields)
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        group = param.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            params.append(param)
            continue
        defaults = group() if param.default is param.empty else param.default
        # include_extras keeps the typer.Option inside each field's Annotated type.
        hints = typing.get_type_hints(group, include_extras=True)
        names = [field.name for field in dataclasses.fields(group)]
        groups[param.name] = (group, names)
        params += [
            inspect.Parameter(
                name, param.kind, default=getattr(defaults, name), annotation=hints[name]
            )
            for name in names
        ]
    taken = [p.name for p in params]
    if len(taken) != len(set(taken)):
        raise TypeError(f"{command.__name__}: an option group repeats a parameter name")

    @functools.wraps(command)
    def run(**kwargs: Any) -> R:  # typer passes every parameter by name
        for name, (group, names) in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in names})
        return command(**kwargs)

    # typer reads the signature (and annotations) of what it is given: the spread-out one.
    new = signature.replace(parameters=params)
    run.__signature__ = new  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__annotations__["return"] = new.return_annotation
    return run
