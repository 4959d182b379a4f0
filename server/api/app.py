"""The FastAPI application factory: ``uvicorn --factory server.api.app:create_app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from learner.builtin.config import context_chars_for
from learner.store.db import make_engine, setup_lock, upgrade_locked
from server.api.deps import AppState, reject_unknown_query
from server.api.errors import BodySizeLimit, install_error_handlers
from server.api.routes import (
    adapters,
    buckets,
    completions,
    dashboard,
    evaluations,
    health,
    learner,
    metrics,
    tasks,
    teacher,
)
from server.auth.keys import ADMIN_KEY_FILE, Authenticator, FailureLimiter, ensure_admin_key
from server.auth.middleware import AuthMiddleware
from server.observability.metrics import install_metrics
from server.observability.middleware import MetricsMiddleware
from server.process.settings import Settings
from server.serving.engine import InferenceEngine
from server.serving.queue import InferenceQueue

log = logging.getLogger(__name__)


def resolve_base_model(spec: str, data_dir: Path) -> Path:
    from learner.builtin.model import resolve_base_model as resolve  # imports torch: only when used

    return resolve(spec, data_dir)


def prepare_database(settings: Settings) -> Engine:
    """Connect, migrate to the newest schema and make sure an admin key exists."""
    engine = make_engine(settings.resolved_database_url())
    # Under the setup lock: two processes starting together migrate once, mint one key.
    with setup_lock(engine):
        upgrade_locked(engine)
        new_key = ensure_admin_key(engine, settings.data_dir, settings.api_keys)
    if new_key is not None:
        path = (settings.data_dir / ADMIN_KEY_FILE).resolve()
        # Printed once, at the first start; afterwards only the file holds it.
        print(f"lifelong: created an admin API key (saved in {path}):\n  {new_key}", flush=True)
    return engine


def open_state(settings: Settings) -> AppState:
    """The app's long-lived objects: database engine and authenticator."""
    engine = prepare_database(settings)
    authenticator = Authenticator(
        engine, settings.api_keys, settings.auth_cache_seconds, settings.auth_miss_cache_seconds
    )
    inference = make_inference_engine(settings, engine)
    if settings.preload_model:
        inference.start_once()
    limits = settings.limits.ingest_limits(base_model_context(settings), settings.base_model)
    queue = InferenceQueue(
        settings.limits.max_queued_completions, settings.limits.max_request_tokens
    )
    return AppState(settings, engine, authenticator, limits, inference, queue)


def make_inference_engine(settings: Settings, engine: Engine) -> InferenceEngine:
    """The serving backend that ``LIFELONG_SERVING_BACKEND`` names."""

    def model_dir() -> Path:
        return resolve_base_model(settings.base_model, settings.data_dir)

    if settings.serving_backend == "vllm":
        from server.serving.vllm_engine import VllmEngine

        vllm = settings.vllm
        return VllmEngine(
            engine,
            model_dir,
            max_lora_rank=vllm.max_lora_rank or settings.learner.lora.r,
            max_loras=vllm.max_loras,
            gpu_memory_utilization=vllm.gpu_memory_utilization,
            data_dir=settings.data_dir,
        )
    return InferenceEngine(
        engine,
        model_dir,
        device=settings.device,
        num_threads=settings.inference_threads,
        data_dir=settings.data_dir,
    )


def base_model_context(settings: Settings) -> int | None:
    """Characters that fit in the base model's context; None (no check) when unknown."""
    try:
        return context_chars_for(settings.base_model)
    except (ValueError, OSError, KeyError) as exc:
        log.warning("no context limit for %s: %s", settings.base_model, exc)
        return None


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database and other heavy objects are opened in the lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = open_state(settings)
        app.state.lifelong = state
        try:
            yield
        finally:
            state.inference_queue.shutdown()
            if state.inference is not None:
                state.inference.stop()
            state.engine.dispose()

    app = FastAPI(
        title="lifelong",
        version="0.1.0",
        summary="Continual LoRA learning from task streams, with a retention gate.",
        lifespan=lifespan,
        # Every call needs a bearer key, so the CSRF risk that strict checking guards
        # against does not apply; clients that omit the header still get JSON parsing.
        strict_content_type=False,
        dependencies=[Depends(reject_unknown_query)],
    )
    install_error_handlers(app)
    limits = settings.limits
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_other_body_bytes, bulk_bytes=limits.max_body_bytes
    )
    # Added after the size limit, so outside it: strangers are turned away before any body
    # is read.
    limiter = FailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds)
    app.add_middleware(AuthMiddleware, limiter=limiter)
    # Added last, so outermost: it counts every status, the 401 / 429 / 413 above included.
    app.add_middleware(MetricsMiddleware, metrics=install_metrics(app))
    routers = (
        health,
        metrics,
        dashboard,
        tasks,
        buckets,
        teacher,
        evaluations,
        adapters,
        learner,
        completions,
    )
    for module in routers:
        app.include_router(module.router)
    return app
