"""Liveness and readiness.

``/readyz`` is polled often (load balancers, orchestrators), so it is cheap: the scripts'
head revision is read once per process (:func:`learner.store.db.head_revisions`), and once
the database has been seen at that revision it is not asked again for
``RECHECK_SECONDS``. A failure answers 503 with a fixed reason; the details (which can
name hosts, users and databases) go to the log only.
"""

from __future__ import annotations

import logging
import threading
import time
from weakref import WeakKeyDictionary

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from learner.store.db import current_revisions, head_revisions
from server.api.deps import State

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# How long a database seen at the head revision counts as ready without asking it again.
RECHECK_SECONDS = 5.0
DATABASE_UNAVAILABLE = "database unavailable"
SCHEMA_BEHIND = "schema not at the expected revision"


class Readiness:
    """The readiness of one engine's database, remembered for ``RECHECK_SECONDS``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ready_until = -float("inf")  # time.monotonic() up to which it counts as ready

    def cached(self) -> bool:
        """True while the last successful check is recent enough to answer from."""
        return time.monotonic() < self._ready_until

    def check(self) -> str | None:
        """Ask the database now; None when it is ready, else the reason to show."""
        try:
            current = current_revisions(self.engine)
        except SQLAlchemyError as exc:
            log.warning("readiness: the database did not answer: %s", exc)
            return DATABASE_UNAVAILABLE
        expected = head_revisions()
        if current != expected:
            log.warning(
                "readiness: the database is at revision %s, this code needs %s",
                sorted(current) or "none",
                sorted(expected),
            )
            return SCHEMA_BEHIND
        self._ready_until = time.monotonic() + RECHECK_SECONDS
        return None


# One per engine (an app has one; tests make many), dropped with its engine.
_readiness: WeakKeyDictionary[Engine, Readiness] = WeakKeyDictionary()
_readiness_lock = threading.Lock()


def readiness_of(engine: Engine) -> Readiness:
    """The :class:`Readiness` of ``engine``, made on first use."""
    with _readiness_lock:
        found = _readiness.get(engine)
        if found is None:
            found = _readiness[engine] = Readiness(engine)
        return found


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (async: answered on the event loop, never behind the thread pool)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    """The database answers and carries the newest schema revision.

    A recent success is answered on the event loop; a check that has to ask the database
    runs in the thread pool, like every blocking call.
    """
    readiness = readiness_of(state.engine)
    if not readiness.cached():
        reason = await run_in_threadpool(readiness.check)
        if reason is not None:
            return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    return JSONResponse({"status": "ready"})
