"""Shared fixtures: every storage and API test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``LIFELONG_TEST_POSTGRES_URL`` (default: the local server with trust
auth). Each test gets a fresh database: SQLite copies a migrated template file,
PostgreSQL clones a migrated template database (``CREATE DATABASE ... TEMPLATE``), so no
test sees another's rows. Under CI an unreachable PostgreSQL fails the run instead of
skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from learner.store.db import make_engine, upgrade

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def pg_admin_url() -> str:
    return os.environ.get("LIFELONG_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def _pg_admin_engine() -> Engine:
    return create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")


def _require_postgres() -> None:
    try:
        with _pg_admin_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {pg_admin_url()} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {pg_admin_url()} is not reachable")


def create_pg_database(template: str | None = None) -> str:
    """Create a new database (optionally cloned from ``template``) and return its URL."""
    name = f"lifelong_t_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    with _pg_admin_engine().connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}{clause}"))
    return make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    with _pg_admin_engine().connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema: whoever uses it migrates it), dropped
    at the end."""
    _require_postgres()
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    _require_postgres()
    url = create_pg_database()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield make_url(url).database or ""
    drop_pg_database(url)


def fresh_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of ``backend`` that is dropped after the test."""
    if backend == "sqlite":
        path = tmp_path / "lifelong.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = create_pg_database(template=request.getfixturevalue("pg_template"))
    request.addfinalizer(lambda: drop_pg_database(url))
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh migrated database; parametrized over SQLite and PostgreSQL."""
    return fresh_database_url(backend, request, tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh database with no tables at all (for migration tests)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    _require_postgres()
    url = create_pg_database()
    request.addfinalizer(lambda: drop_pg_database(url))
    return url


def _model_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """Where a session's builtin model is built: under pytest-xdist, one directory that every
    worker shares (``ensure_builtin_model`` locks it, so the first worker builds and the
    others wait and reuse it instead of training the same model again on the same cores)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``builtin:micro`` model, bootstrapped once per test session."""
    from learner.builtin.model import BuiltinConfig, ensure_builtin_model

    data_dir = _model_root(tmp_path_factory, "builtin")
    return ensure_builtin_model(data_dir, BuiltinConfig.preset("micro"), progress=False)


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a BPE tokenizer and a Llama-3-style chat template (not builtin,
    see tests/chat_model.py), made once per session."""
    from chat_model import tiny_chat_llama

    return tiny_chat_llama(tmp_path_factory.mktemp("chat-llama") / "model")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The builtin ``small`` preset (its weights ship: installed in a second), once per session.

    ``LIFELONG_TEST_SMALL_MODEL_ROOT`` names a directory to build it in (or reuse it from)
    across sessions while developing; by default a fresh temporary directory."""
    from learner.builtin.model import BuiltinConfig, ensure_builtin_model

    cached = os.environ.get("LIFELONG_TEST_SMALL_MODEL_ROOT")
    root = Path(cached) if cached else _model_root(tmp_path_factory, "small-model")
    return str(ensure_builtin_model(root, BuiltinConfig.preset("small"), progress=False))


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (root only; skipped where mounting is not
    allowed), so that a test can fill a data dir's disk; unmounted afterwards."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    argv = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is present (CI has none)."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
