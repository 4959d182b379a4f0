"""The benchmark scripts run as ``python bench/NAME.py``: Python puts ``bench/`` first on
``sys.path``, so a script named like one of the project's packages would be imported in its
place by every other benchmark (``bench/learner.py`` once broke ``bench/load.py`` so)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def project_packages() -> set[str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    tops = {p.split(".")[0].rstrip("*") for p in find["include"]}
    return {t for t in tops if (REPO_ROOT / t / "__init__.py").exists()}


def test_no_benchmark_script_shadows_a_project_package() -> None:
    packages = project_packages()
    assert {"learner", "server", "teacher"} <= packages, packages
    scripts = {p.stem for p in (REPO_ROOT / "bench").glob("*.py")}
    assert scripts, "no benchmark scripts found"
    assert not scripts & packages, scripts & packages
