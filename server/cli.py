"""The ``lifelong`` command line: serve, keys, db."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType

import uvicorn
from sqlalchemy import Engine

from learner.store.db import make_engine, setup_lock, upgrade, write_transaction
from learner.store.keys import create_key, list_keys, revoke_key
from learner.store.models import KEY_SCOPES
from server.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Environment settings with the command-line flags laid over them."""
    overrides = {
        field: getattr(args, field)
        for field in ("data_dir", "host", "port", "database_url")
        if getattr(args, field, None) is not None
    }
    return Settings(**overrides)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (LIFELONG_DATA_DIR)")
    parser.add_argument("--database-url", dest="database_url", help="LIFELONG_DATABASE_URL")


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import create_app, prepare_database
    from server.supervisor import DemoFeeder, LearnerSupervisor, child_env, learner_argv

    settings = _settings(args)
    if "LIFELONG_PRELOAD_MODEL" not in os.environ:
        # A serving process loads (and, the first time, waits for) the model at once.
        settings = settings.model_copy(update={"preload_model": True})
    engine = prepare_database(settings)
    ensure_suite(settings, engine)
    url = settings.resolved_database_url()
    supervisor = None
    if not args.no_learner:
        supervisor = LearnerSupervisor(learner_argv(str(settings.data_dir)), child_env(url))
        supervisor.start()
    feeder = DemoFeeder(engine, interval=args.demo_interval) if args.demo else None
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
    return 0


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


def ensure_suite(settings: Settings, engine: Engine) -> None:
    """The builtin model's alignment suite, created at the first start of a builtin base."""
    from learner.alignment_suite import ensure_alignment_suite
    from learner.builtin_config import is_builtin_model

    if settings.alignment_suite and is_builtin_model(settings.base_model):
        with setup_lock(engine):  # a server and its learner start together
            ensure_alignment_suite(engine)


def cmd_learner(args: argparse.Namespace) -> int:
    import signal
    import threading

    from learner.builtin import resolve_base_model
    from learner.worker import Learner

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s lifelong learner %(levelname)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    ensure_suite(settings, engine)
    config = settings.learner
    if config.device == "auto" and settings.device != "auto":
        config = replace(config, device=settings.device)
    if args.max_steps is not None:
        config = replace(config, max_steps=args.max_steps)

    def exit_now(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    # Until the loop runs (the builtin bootstrap, loading the model), a signal ends the
    # process at once: the bootstrap writes atomically and starts over next time.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, exit_now)
    model_dir = resolve_base_model(settings.base_model, settings.data_dir)
    learner = Learner(
        engine,
        config,
        settings.data_dir,
        model_dir,
        settings.base_model,
        replay=settings.replay,
        teacher=settings.teacher,
        difficulty=settings.difficulty,
        gate=settings.gate,
    )
    print(f"lifelong learner: base model {settings.base_model} ({model_dir})", flush=True)
    # From here on a signal finishes the current step and writes a checkpoint.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    learner.run(stop)
    return 0


def _engine(args: argparse.Namespace) -> Engine:
    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return engine


def cmd_keys(args: argparse.Namespace) -> int:
    engine = _engine(args)
    if args.keys_command == "create":
        with write_transaction(engine) as conn:
            key = create_key(conn, args.scope, args.name)
        print(key)
    elif args.keys_command == "list":
        with engine.connect() as conn:
            for k in list_keys(conn):
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.id}\t{k.scope}\t{k.name}\t{k.created_at:%Y-%m-%d %H:%M}\t{state}")
    elif args.keys_command == "revoke":
        with write_transaction(engine) as conn:
            if not revoke_key(conn, args.id):
                print(f"no active key with id {args.id}", file=sys.stderr)
                return 1
        print(f"revoked key {args.id}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    _engine(args)
    print("database is at the newest schema revision")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (and the learner)")
    _add_common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-learner", action="store_true", help="run the API alone")
    serve.add_argument("--demo", action="store_true", help="also feed the demo task stream")
    serve.add_argument(
        "--demo-interval", type=float, default=10.0, help="seconds between demo batches"
    )
    serve.set_defaults(func=cmd_serve)

    learner = sub.add_parser("learner", help="run a learner worker alone")
    _add_common(learner)
    learner.add_argument("--max-steps", type=int, help="stop after this many train steps")
    learner.set_defaults(func=cmd_learner)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--scope", choices=KEY_SCOPES, default="submit")
    create.add_argument("--name", default="cli")
    keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    for p in (create, keys_sub.choices["list"], revoke):
        _add_common(p)
    keys.set_defaults(func=cmd_keys)

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    _add_common(db)
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
