"""Write-behind of ``replay_state`` rows: the index changes at once, SQL a little later.

Writing 256 rows to SQL on every training step would cost more than the step's sampling
and would take SQLite's write lock from the server's ingestion many times a second. The
writer queues the rows as numpy arrays (no per-row Python work on the caller's thread)
and a background thread writes them in one transaction every ``flush_interval`` seconds,
or sooner when ``max_pending`` rows wait. If SQL falls ten times that far behind (it is
down, or updates come faster than it absorbs), the caller's next update flushes itself:
memory stays bounded and errors surface.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine

from learner.replay import storage
from learner.replay.sumtree import Floats, Ints
from learner.store.db import write_transaction

log = logging.getLogger(__name__)

BACKPRESSURE_FACTOR = 10  # above this many times max_pending, the caller flushes itself
BACKFILL_CHUNK = 100_000  # ids per background flush when backfilling entry rows


@dataclass
class _Backfill:
    """Entry rows still to write for ids in ``(done_up_to, up_to]``, at ``priority``."""

    done_up_to: int
    up_to: int
    priority: float


def _last_per_id(ids: Ints) -> tuple[Ints, Ints, Ints]:
    """Sorted unique ids, the index of each one's LAST occurrence, and its count."""
    uniq, first_in_reversed, counts = np.unique(ids[::-1], return_index=True, return_counts=True)
    return uniq, ids.size - 1 - first_in_reversed, counts


class PriorityWriter:
    """Queues entry rows and priority updates and writes them to SQL in batches.

    Each flush writes everything queued so far in ONE transaction, so SQL always holds
    the state after some flush: a crash loses the rows queued since the last flush and
    nothing else. Flushes run one at a time and in queue order, so an older value never
    overwrites a newer one. A failed flush puts its rows back at the front of the queue;
    the background thread logs the error and retries, ``flush()`` raises it.
    """

    def __init__(
        self,
        engine: Engine,
        flush_interval: float = 1.0,
        max_pending: int = 50_000,
        background: bool = True,
    ) -> None:
        self.engine = engine
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.errors = 0  # background flushes that failed (and were retried)
        self._entries: list[tuple[Ints, Floats]] = []
        self._updates: list[tuple[Ints, Floats, Floats, int]] = []
        self._pending = 0
        self._backfill: _Backfill | None = None
        self._lock = threading.Lock()  # guards the queues
        self._flush_lock = threading.Lock()  # one flush at a time, in queue order
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="replay-writer", daemon=True)
            self._thread.start()

    @property
    def pending(self) -> int:
        """Rows queued and not yet written."""
        return self._pending

    def add_entries(self, ids: Ints, priorities: Floats) -> None:
        """Entry rows of new examples (their priority, never sampled)."""
        if ids.size:
            with self._lock:
                self._entries.append((ids, priorities))
                self._pending += ids.size
            self._after_add()

    def add_backfill(self, up_to_id: int, priority: float) -> None:
        """Entry rows at ``priority`` for every train example up to ``up_to_id`` that has
        none (a start-up over examples that no store has seen). One statement per chunk of
        ids: on PostgreSQL a million rows take about 10 s (a foreign-key check per row), so
        background flushes do one chunk each rather than holding up start-up."""
        with self._lock:
            self._backfill = _Backfill(0, up_to_id, priority)
        self._wake.set()

    def add_updates(self, ids: Ints, priorities: Floats, losses: Floats, step: int) -> None:
        """Priority updates; each occurrence of an id counts one ``times_sampled``."""
        if ids.size:
            with self._lock:
                self._updates.append((ids, priorities, losses, step))
                self._pending += ids.size
            self._after_add()

    def _after_add(self) -> None:
        if self._pending >= BACKPRESSURE_FACTOR * self.max_pending:
            self.flush()  # SQL cannot keep up (or is down): do not grow without bound
        elif self._pending >= self.max_pending:
            self._wake.set()

    def flush(self) -> int:
        """Write every queued row now, in one transaction; returns the rows written."""
        return self._flush(backfill_chunks=None)

    def _flush(self, backfill_chunks: int | None) -> int:
        with self._flush_lock:
            with self._lock:
                entries, updates, count = self._entries, self._updates, self._pending
                self._entries, self._updates, self._pending = [], [], 0
                backfill = self._backfill
            if count == 0 and backfill is None:
                return 0
            try:
                with write_transaction(self.engine) as conn:
                    if backfill is not None:  # first: the updates below must win
                        reached = self._run_backfill(conn, backfill, backfill_chunks)
                    if entries:
                        storage.insert_entries(conn, *self._merge_entries(entries))
                    if updates:
                        storage.upsert_updates(conn, *self._merge_updates(updates))
            except BaseException:
                with self._lock:
                    self._entries[:0], self._updates[:0] = entries, updates
                    self._pending += count
                raise
            if backfill is not None:  # committed: move on
                with self._lock:
                    backfill.done_up_to = reached
                    if reached >= backfill.up_to and self._backfill is backfill:
                        self._backfill = None
            return count

    @staticmethod
    def _run_backfill(conn: Connection, backfill: _Backfill, chunks: int | None) -> int:
        """Backfill ``chunks`` chunks (all when None); returns the id reached."""
        reached = backfill.done_up_to
        while reached < backfill.up_to and (chunks is None or chunks > 0):
            until = min(reached + BACKFILL_CHUNK, backfill.up_to)
            storage.backfill_entries(conn, backfill.priority, reached, until)
            reached = until
            chunks = None if chunks is None else chunks - 1
        return reached

    @staticmethod
    def _merge_entries(entries: list[tuple[Ints, Floats]]) -> tuple[Ints, Floats]:
        ids = np.concatenate([e[0] for e in entries])
        uniq, last, _ = _last_per_id(ids)
        return uniq, np.concatenate([e[1] for e in entries])[last]

    @staticmethod
    def _merge_updates(
        updates: list[tuple[Ints, Floats, Floats, int]],
    ) -> tuple[Ints, Floats, Floats, Ints, Ints]:
        """One row per id: the last priority, loss and step, and the number of updates."""
        ids = np.concatenate([u[0] for u in updates])
        uniq, last, counts = _last_per_id(ids)
        priorities = np.concatenate([u[1] for u in updates])[last]
        losses = np.concatenate([u[2] for u in updates])[last]
        steps = np.concatenate([np.full(u[0].size, u[3], dtype=np.int64) for u in updates])
        return uniq, priorities, losses, counts.astype(np.int64), steps[last]

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._flush(backfill_chunks=1)
            except Exception:
                self.errors += 1
                log.warning("replay priority flush failed; retrying", exc_info=True)
                self._closed.wait(self.flush_interval)

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
