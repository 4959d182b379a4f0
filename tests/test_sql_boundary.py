"""All SQL lives in ``learner/store/`` and ``learner/replay/``: a schema change reaches those
packages only. Checked on the source (an AST walk, nothing imported), so that a statement
written anywhere else fails here with its file and line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("learner", "server", "teacher")
SQL_HOMES = ("learner/store/", "learner/replay/")
#: What code outside the homes may import from sqlalchemy: the types it passes along.
ALLOWED_NAMES = {"Connection", "Engine"}
#: Methods that run a statement.
EXECUTING = {"execute", "exec_driver_sql", "scalar", "scalars", "scalar_one", "scalar_one_or_none"}


def offences(source: str) -> list[tuple[int, str]]:
    """(line, reason) of every SQL construct in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            if node.module == "sqlalchemy.exc":
                continue
            names = {alias.name for alias in node.names} - ALLOWED_NAMES
            if names or node.module != "sqlalchemy":
                found.append((node.lineno, f"imports {sorted(names)} from {node.module}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sqlalchemy") and alias.name != "sqlalchemy.exc":
                    found.append((node.lineno, f"imports {alias.name}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in EXECUTING
        ):
            found.append((node.lineno, f"calls .{node.func.attr}()"))
    return found


def scanned() -> dict[str, list[tuple[int, str]]]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return {
        rel: offences(path.read_text())
        for path in files
        if not (rel := path.relative_to(ROOT).as_posix()).startswith(SQL_HOMES)
    }


def test_the_checker_flags_sql() -> None:
    source = "from sqlalchemy import Engine, select\nimport sqlalchemy as sa\nconn.execute(q)\n"
    assert [line for line, _ in offences(source)] == [1, 2, 3]
    assert (
        offences("from sqlalchemy import Connection\nfrom sqlalchemy.exc import OperationalError\n")
        == []
    )


def test_no_sql_outside_the_store_and_the_replay_packages() -> None:
    files = scanned()
    assert len(files) > 50, "the walk found too few files: wrong root?"
    found = [f"{rel}:{line}: {why}" for rel, hits in files.items() for line, why in hits]
    assert not found, "SQL outside learner/store and learner/replay:\n" + "\n".join(found)


def test_the_store_depends_on_nothing_above_it() -> None:
    """learner/store and learner/replay import no other project module (the pure, standard
    library only learner.evaluation.graders and learner.validation aside): the rest of the
    code depends on them, so an import the other way would be a cycle, and would pull
    torch into the server's database access."""
    allowed = (
        "learner.store",
        "learner.replay",
        "learner.evaluation.graders",
        "learner.validation",
    )
    found = []
    for home in SQL_HOMES:
        for path in sorted((ROOT / home).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                for name in names:
                    if name.split(".")[0] in PACKAGES and not name.startswith(allowed):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not found, "\n".join(found)
