"""The learner's side of the training lease: wait for it, keep it alive, fence writes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

from learner.store import lease
from learner.store.db import write_transaction

log = logging.getLogger(__name__)
#: A write transaction that fails (:class:`LeaseLost`) unless this learner holds the lease.
Fenced = Callable[[], AbstractContextManager[Connection]]


class LeaseLost(RuntimeError):
    """Another learner took the training lease over; this one must stop."""


class LeaseHolder:
    """Holds the lease for one learner; ``status`` is stored with every renewal."""

    def __init__(
        self, engine: Engine, holder: str, ttl: float, status: Callable[[], dict[str, Any]]
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl = ttl
        self.status = status
        self._last_renewal = 0.0

    def wait(self, stop: threading.Event) -> bool:
        """Block until the lease is ours (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if lease.try_acquire(self.engine, self.holder, self.ttl):
                self._last_renewal = time.monotonic()
                return True
            log.info("training lease is held by another learner; waiting")
            stop.wait(min(self.ttl / 3, 2.0))
        return False

    def keep(self, force: bool = False) -> None:
        """Renew the lease when a third of its time has passed (or now, with ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_renewal < self.ttl / 3:
            return
        if not lease.heartbeat(self.engine, self.holder, self.status()):
            raise LeaseLost(f"{self.holder} lost the training lease")
        self._last_renewal = now

    @contextmanager
    def fenced(self) -> Iterator[Connection]:
        """A write transaction that commits only while this learner holds the lease."""
        with write_transaction(self.engine) as conn:
            # The status goes along: a renewal here also stands for the periodic heartbeat.
            if not lease.renew(conn, self.holder, self.status()):
                raise LeaseLost(f"{self.holder} lost the training lease")
            self._last_renewal = time.monotonic()
            yield conn

    def release(self) -> None:
        lease.release(self.engine, self.holder)
