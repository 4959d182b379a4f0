"""In-process API fixtures: the real app (lifespan included) on SQLite and PostgreSQL.

``client`` is a :class:`fastapi.testclient.TestClient` entered as a context manager, so the
lifespan migrates the database and sets up authentication exactly as in production; it
uses the small ``TEST_LIMITS`` below. Tests that need other settings call
``make_client(**settings_overrides)``. ``api`` bundles the small helpers the tests share
(headers for the test keys, the stored example count, the error message of a response);
``adapters`` writes adapter versions into the test data directory as the learner does.
``live_api`` serves the same app with a real uvicorn server on a loopback port (in a
thread of the test process), for clients that speak HTTP, such as the ``lifelong`` CLI.
Test modules do not import this file (it is not importable as a package); they use the
fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from learner.model import registry
from learner.store.buckets import count_examples
from learner.store.db import write_transaction
from server.api.app import create_app
from server.process.settings import LimitSettings, Settings

KEYS = {"admin": "test-admin-key", "submit": "test-submit-key", "read": "test-read-key"}
# Small limits so that the limit tests send small bodies (test_tasks_api relies on them).
TEST_LIMITS = LimitSettings(
    max_examples_per_request=5,
    max_prompt_chars=20,
    max_target_chars=10,
    max_body_bytes=4096,
)

ClientFactory = Callable[..., TestClient]


class JsonResponse(Protocol):
    """What the helpers need of a response (TestClient's and httpx's both fit)."""

    def json(self) -> Any: ...


class Api:
    """Helpers bound to the test database."""

    keys = KEYS
    api_keys = ",".join(f"{scope}:{key}" for scope, key in KEYS.items())
    limits = TEST_LIMITS

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def auth(scope: str = "submit") -> dict[str, str]:
        """Authorization header for a test key: ``admin``, ``submit`` or ``read``."""
        return {"Authorization": f"Bearer {KEYS[scope]}"}

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    @staticmethod
    def error(response: JsonResponse) -> str:
        """The message of an error response, checking the uniform error shape on the way."""
        body = response.json()
        assert set(body) == {"error"}, body
        message = body["error"]["message"]
        assert isinstance(message, str) and message, body
        return message

    @staticmethod
    def examples(n: int, start: int = 0, prefix: str = "q") -> list[dict[str, Any]]:
        """``n`` distinct valid examples, short enough for TEST_LIMITS."""
        return [
            {"prompt": f"{prefix}{i}+{i}=?", "target": str(2 * i), "id": f"{prefix}-{i}"}
            for i in range(start, start + n)
        ]

    def count(self) -> int:
        """Examples stored in the database, all buckets together."""
        with self.engine.connect() as conn:
            return count_examples(conn)


@pytest.fixture
def api(engine: Engine) -> Api:
    return Api(engine)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(db_url: str, data_dir: Path) -> Callable[..., Settings]:
    """Settings on the test database; keyword arguments override the defaults."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": db_url,
            "api_keys": Api.api_keys,
            "limits": TEST_LIMITS,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """Start an app (running its lifespan) with overridden settings; all closed at teardown.

    Server errors come back as responses (as a client would see them), not as exceptions.
    """
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            app = create_app(make_settings(**overrides))
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


@pytest.fixture
def make_serving(make_client: ClientFactory) -> Callable[..., TestClient]:
    """An app serving the model in ``model_dir`` on the CPU, loaded before it is returned;
    keyword arguments override settings."""

    def make(model_dir: Path, **overrides: Any) -> TestClient:
        client = make_client(base_model=str(model_dir), preload_model=True, device="cpu",
                             **overrides)  # fmt: skip
        inference = client.app.state.lifelong.inference  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while not inference.ready:
            assert time.monotonic() < deadline, f"{model_dir} did not load"
            time.sleep(0.05)
        return client

    return make


@pytest.fixture(scope="session")
def micro_lora_dir(micro_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, freshly initialised) LoRA adapter for the ``builtin:micro`` model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from learner.model.loading import load_base

    base, _ = load_base(micro_model_dir, torch.device("cpu"))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM")
    path = tmp_path_factory.mktemp("lora") / "adapter"
    get_peft_model(base, lora).save_pretrained(str(path))
    return path


class Adapters:
    """Adapter versions made the way the learner makes them: a reserved row, the files under
    ``<data_dir>/adapters/v<N>``, a relative path and the weights' sha256 in the row."""

    def __init__(self, engine: Engine, data_dir: Path, request: pytest.FixtureRequest) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.request = request

    def weights(self, version: int) -> Path:
        return self.data_dir / registry.version_relpath(version) / registry.ADAPTER_WEIGHTS

    def add(
        self,
        status: str = "candidate",
        parent: int | None = None,
        gate_report: dict[str, Any] | None = None,
        real: bool = False,
    ) -> int:
        """A new version with ``status``; ``real``: loadable weights for the micro model
        (otherwise a few placeholder bytes). Pending versions have no files; retired ones
        had theirs pruned."""
        with write_transaction(self.engine) as conn:
            version = registry.reserve_version(conn, parent, "builtin:micro", 10)
        if status == "pending":
            return version
        path = self.data_dir / registry.version_relpath(version)
        if real:
            shutil.copytree(self.request.getfixturevalue("micro_lora_dir"), path)
        else:
            path.mkdir(parents=True)
            (path / registry.ADAPTER_WEIGHTS).write_bytes(b"weights %d" % version)
        provenance = {"base_model": "builtin:micro", "version": version, "parent_version": parent}
        with write_transaction(self.engine) as conn:
            registry.complete_version(
                conn, version, registry.sha256_file(self.weights(version)), provenance
            )
            if status != "candidate" or gate_report is not None:
                registry.set_status(conn, version, status, gate_report)
        if status == "retired":
            shutil.rmtree(path)
        return version

    def corrupt(self, version: int) -> None:
        """Flip one byte of the weights (same size; the mtime moves on, as an edit's would)."""
        weights = self.weights(version)
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stat = weights.stat()
        weights.write_bytes(bytes(data))
        # The integrity check re-hashes a file whose size or mtime changed; make sure the
        # mtime differs even on a file system with coarse timestamps.
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    def promote(self, version: int, actor: str = "test") -> None:
        with write_transaction(self.engine) as conn:
            registry.promote(conn, version, actor, "test promotion")


@pytest.fixture
def adapters(engine: Engine, data_dir: Path, request: pytest.FixtureRequest) -> Adapters:
    return Adapters(engine, data_dir, request)


@dataclass(frozen=True)
class LiveApi:
    """A running uvicorn server of the app on the test database and data directory."""

    url: str
    data_dir: Path
    database_url: str
    settings: Settings


def _serve_in_thread(settings: Settings, stack: ExitStack) -> str:
    """Start uvicorn on a free loopback port, stopped when ``stack`` closes; its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(15)
        sock.close()

    stack.callback(stop)
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def start_live_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveApi]]:
    """Start the app under uvicorn with overridden settings; all stopped at teardown."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> LiveApi:
            settings = make_settings(**overrides)
            url = _serve_in_thread(settings, stack)
            database_url = settings.resolved_database_url()
            return LiveApi(url, settings.data_dir, database_url, settings)

        yield start


@pytest.fixture
def live_api(start_live_api: Callable[..., LiveApi]) -> LiveApi:
    """The app with the test settings (``TEST_LIMITS``, the test keys) under uvicorn."""
    return start_live_api()
