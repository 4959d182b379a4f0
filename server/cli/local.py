"""The commands that run the service or work on its database directly: ``serve``,
``learner``, ``keys`` and ``db``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
import uvicorn
from sqlalchemy import Engine

from server.cli.groups import with_groups
from server.cli.options import Database, Logging
from server.process.settings import Settings

Scope = Literal["read", "submit", "admin"]  # learner.store.models.KEY_SCOPES


def ensure_suite(
    settings: Settings, engine: Engine, model_dir: Path | None = None, device: str = "cpu"
) -> None:
    """The alignment suite, created at first start (Settings.suite_kind): the builtin one
    by whichever process starts first; the general one by the learner (``model_dir``: the
    base model, which answers it)."""
    from learner.builtin.config import builtin_mix
    from learner.builtin.families import FOUNDATION_MIX
    from learner.builtin.suites import ensure_alignment_suite
    from learner.evaluation.general_suite import ensure_general_suite
    from learner.store.db import setup_lock

    kind = settings.suite_kind()
    if kind == "builtin":
        mix = builtin_mix(settings.base_model) or FOUNDATION_MIX  # what the base learned
        with setup_lock(engine):  # a server and its learner start together
            ensure_alignment_suite(engine, mix=mix)
    elif kind == "general" and model_dir is not None:  # takes the setup lock to store
        ensure_general_suite(
            engine, model_dir, settings.base_model, settings.data_dir, device,
            settings.general_suite_answer_tokens,
        )  # fmt: skip


# --- serve -------------------------------------------------------------------------------


class SignalAwareServer(uvicorn.Server):
    """uvicorn's server, calling ``on_exit`` at the first exit signal (not only after the
    HTTP side drained), so that a learner that exits meanwhile is never restarted."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


@with_groups
def serve(
    database: Database,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (LIFELONG_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port to listen on (LIFELONG_PORT)."),
    ] = None,
    no_learner: Annotated[
        bool, typer.Option("--no-learner", help="Run the API alone, without a learner.")
    ] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Also feed the demo task stream.")] = False,
    demo_interval: Annotated[
        float, typer.Option("--demo-interval", help="Seconds between demo batches.")
    ] = 10.0,
    *,
    logs: Logging,
) -> None:
    """Run the HTTP API, with a learner process that it restarts if it dies."""
    from server.api.app import create_app, prepare_database
    from server.process.supervisor import DemoFeeder, LearnerSupervisor, child_env, learner_argv

    logs.configure("server")
    settings = database.settings(host=host, port=port)
    if "LIFELONG_PRELOAD_MODEL" not in os.environ:
        # A serving process loads (and, the first time, waits for) the model at once.
        settings = settings.model_copy(update={"preload_model": True})
    engine = prepare_database(settings)
    ensure_suite(settings, engine)
    url = settings.resolved_database_url()
    supervisor = None
    if not no_learner:
        env = child_env(url, log_json=logs.log_json, log_level=logs.log_level)
        supervisor = LearnerSupervisor(learner_argv(str(settings.data_dir)), env)
        supervisor.start()
    feeder = DemoFeeder(engine, interval=demo_interval) if demo else None
    if feeder is not None:
        feeder.start()
    print(
        f"lifelong: serving on http://{settings.host}:{settings.port} "
        f"(API docs at /docs)\n"
        f"lifelong: admin API key in {(settings.data_dir / 'admin.key').resolve()}\n"
        f"lifelong: learner {'off (--no-learner)' if supervisor is None else 'running'}"
        f"{', demo stream on' if feeder else ''}",
        flush=True,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # uvicorn's own loggers go through the handler configured above (text or JSON).
        log_config=None,
        log_level="warning",
        # In-flight requests get this long to finish after SIGTERM / SIGINT.
        timeout_graceful_shutdown=10,
    )
    server = SignalAwareServer(config, on_exit=supervisor.begin_stop if supervisor else None)
    try:
        server.run()
    finally:
        if feeder is not None:
            feeder.stop()
        if supervisor is not None:
            supervisor.stop()


# --- learner -----------------------------------------------------------------------------


MaxSteps = Annotated[
    int | None, typer.Option("--max-steps", help="Stop after this many train steps.")
]


@with_groups
def learner(
    database: Database,
    max_steps: MaxSteps = None,
    *,
    logs: Logging,
) -> None:
    """Run a learner worker alone (``serve`` starts one itself unless --no-learner).

    Under ``torchrun`` (WORLD_SIZE > 1) the ranks train one adapter data-parallel: rank 0
    is the learner (lease, database, teacher, versions); the others only share its steps.
    """
    import signal
    import threading

    from learner.builtin.model import resolve_base_model
    from learner.model.loading import pick_device
    from learner.store.db import make_engine, upgrade
    from learner.training import distributed
    from learner.worker import Learner

    settings = database.settings()
    config = settings.learner
    if config.device == "auto" and settings.device != "auto":
        config = replace(config, device=settings.device)
    if max_steps is not None:
        config = replace(config, max_steps=max_steps)
    context = None
    if distributed.launched_by_torchrun():
        context = distributed.init_from_env(pick_device(config.device))
    rank = "" if context is None else f"-rank{context.rank}"
    logs.configure(f"learner{rank}")
    if context is not None and not context.is_leader:
        # A follower touches no database: the same model, then rank 0's commands until it
        # says stop (signals wait for that: rank 0 still needs the followers to finish).
        distributed.ignore_stop_signals()
        model_dir = resolve_base_model(settings.base_model, settings.data_dir, progress=False)
        device = context.device_for(pick_device(config.device))
        distributed.follow(distributed.DistributedTrainer(config, model_dir, device, context))
        distributed.destroy()
        return

    def exit_now(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        engine = make_engine(settings.resolved_database_url())
        upgrade(engine)
        ensure_suite(settings, engine)
        # Until the loop runs (the builtin bootstrap, loading the model), a signal ends the
        # process at once: the bootstrap writes atomically and starts over next time.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, exit_now)
        model_dir = resolve_base_model(settings.base_model, settings.data_dir)
        ensure_suite(settings, engine, model_dir, config.device)  # the general one: the model
        # Rank 0 of a torchrun group trains through a DistributedTrainer (one process: the
        # Learner's own Trainer, and nothing passed).
        factory = None if context is None else context.trainer_factory()
        worker = Learner(
            engine,
            config,
            settings.data_dir,
            model_dir,
            settings.base_model,
            replay=settings.replay,
            teacher=settings.teacher,
            difficulty=settings.difficulty,
            gate=settings.gate,
            trainer_factory=factory,
            retention=settings.retention,
        )
        print(f"lifelong learner: base model {settings.base_model} ({model_dir})", flush=True)
        # From here on a signal finishes the current step and writes a checkpoint.
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker.run(stop)
    finally:
        if context is not None:
            context.stop_followers()
            distributed.destroy()


# --- keys and db -------------------------------------------------------------------------

keys_app = typer.Typer(
    help="Manage API keys in the database (stored hashed; a key is shown once, when made).",
    no_args_is_help=True,
)


@keys_app.command("create")
@with_groups
def keys_create(
    scope: Annotated[
        Scope,
        typer.Option(
            "--scope",
            help="read: GET only; submit: also tasks and completions; admin: everything.",
        ),
    ] = "submit",
    name: Annotated[
        str, typer.Option("--name", help="Shown in logs and the registry history.")
    ] = "cli",
    *,
    database: Database,
) -> None:
    """Create a key and print it (it is shown this once)."""
    from learner.store.db import write_transaction
    from learner.store.keys import create_key

    with write_transaction(database.open()) as conn:
        key = create_key(conn, scope, name)
    print(key)


@keys_app.command("list")
@with_groups
def keys_list(
    database: Database,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """List keys: id, scope, name, created, state (never the keys themselves)."""
    from learner.store.keys import list_keys

    with database.open().connect() as conn:
        rows = list_keys(conn)
    if as_json:
        from server.cli.render import print_json

        print_json([_key_json(k) for k in rows])
        return
    for k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        print(f"{k.id}\t{k.scope}\t{k.name}\t{k.created_at:%Y-%m-%d %H:%M}\t{state}")


def _key_json(key: Any) -> dict[str, Any]:
    revoked = key.revoked_at.isoformat() if key.revoked_at else None
    return {
        "id": key.id,
        "scope": key.scope,
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "revoked_at": revoked,
    }


@keys_app.command("revoke")
@with_groups
def keys_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id (see `keys list`).")],
    database: Database,
) -> None:
    """Revoke a key by id (running servers stop accepting it within a few seconds)."""
    from learner.store.db import write_transaction
    from learner.store.keys import revoke_key

    with write_transaction(database.open()) as conn:
        revoked = revoke_key(conn, key_id)
    if not revoked:
        print(f"no active key with id {key_id}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"revoked key {key_id}")


@with_groups
def db(
    action: Annotated[
        Literal["upgrade"],
        typer.Argument(help="upgrade: migrate to the newest schema.", show_default=False),
    ],
    database: Database,
) -> None:
    """Database maintenance."""
    database.open()
    print("database is at the newest schema revision")
