"""Finding the examples committed since the last look, late commits included.

Polling ``id > last_id`` alone loses rows on PostgreSQL: ids come from a sequence when a
row is INSERTed but become visible at COMMIT, so a batch that got smaller ids can commit
after a batch with larger ones that the poll has already passed. Ids between the old and
the new ``last_id`` that did not show up are kept as *gaps* and looked up again on every
poll. Gaps must expire: a duplicate (``ON CONFLICT DO NOTHING``) or a rolled-back batch
burns ids that never appear. On SQLite writers are serialised and ids are given out in
commit order, so gaps do not arise there; the code path is the same.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import Connection

from learner.replay import storage
from learner.replay.storage import ExampleRows
from learner.replay.sumtree import Floats, Ints


class ExampleFeed:
    """Polls ``examples`` for new train rows; remembers unseen ids for ``gap_timeout`` s."""

    def __init__(self, gap_timeout: float = 60.0, max_gaps: int = 100_000) -> None:
        self.gap_timeout = gap_timeout
        self.max_gaps = max_gaps
        self.last_id = 0
        self._gaps: Ints = np.empty(0, dtype=np.int64)  # ids not seen yet, ascending
        self._gap_since: Floats = np.empty(0)  # monotonic time each gap was first seen

    @property
    def gaps(self) -> int:
        return int(self._gaps.size)

    def poll(self, conn: Connection, now: float | None = None) -> ExampleRows:
        """Train rows that appeared since the last poll (late commits first), by id."""
        now = time.monotonic() if now is None else now
        late = storage.fetch_ids(conn, self._gaps)
        fresh = storage.fetch_after(conn, self.last_id)
        self._forget_gaps(late.ids, now)
        if fresh.ids.size:
            self._add_gaps(fresh.ids, now)
            self.last_id = int(fresh.ids[-1])
        found = ExampleRows.concat([r for r in (late, fresh) if r.ids.size])
        return found.select(found.train)

    def _forget_gaps(self, found: Ints, now: float) -> None:
        keep = ~np.isin(self._gaps, found) & (self._gap_since > now - self.gap_timeout)
        self._gaps, self._gap_since = self._gaps[keep], self._gap_since[keep]

    def _add_gaps(self, ids: Ints, now: float) -> None:
        """Record the ids in ``(last_id, ids[-1]]`` that are not among ``ids`` (ascending)."""
        # Only the newest max_gaps can be kept, so a huge jump of the sequence costs nothing.
        first = max(self.last_id + 1, int(ids[-1]) + 1 - ids.size - self.max_gaps)
        span = np.arange(first, int(ids[-1]) + 1, dtype=np.int64)
        missing = span[~np.isin(span, ids, assume_unique=True)]
        if missing.size:
            self._gaps = np.concatenate([self._gaps, missing])[-self.max_gaps :]
            since = np.concatenate([self._gap_since, np.full(missing.size, now)])
            self._gap_since = since[-self.max_gaps :]

    def state_dict(self) -> dict[str, Any]:
        return {"last_id": self.last_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_id = int(state["last_id"])
