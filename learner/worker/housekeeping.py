"""Pruning the rows that only grow, in the learner's idle time (DESIGN section 13).

The rules are :mod:`learner.store.retention`'s; this part decides when they run and keeps
each transaction short: one batch of at most ``batch_rows`` deletes per transaction, rule
after rule, until every rule has nothing left or the pass has used its ``pass_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from learner.config import RetentionConfig
from learner.store import retention
from learner.worker.lease_holder import Fenced

log = logging.getLogger(__name__)

DAY = timedelta(days=1)


class Housekeeper:
    """Runs the retention rules now and then; counts what it deleted."""

    def __init__(
        self,
        fenced: Fenced,
        config: RetentionConfig,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.fenced, self.config, self.clock, self.now = fenced, config, clock, now
        self.deleted: Counter[str] = Counter()  # rows per rule, since the start
        self._last_pass = clock()

    def due(self, idle: bool) -> bool:
        """Whether a pass is due: idle past ``interval_seconds``, or busy past
        ``busy_interval_seconds`` (a learner that is never idle prunes too)."""
        if not self.config.enabled:
            return False
        c, waited = self.config, self.clock() - self._last_pass
        return waited >= (c.interval_seconds if idle else c.busy_interval_seconds)

    def maybe_run(self, idle: bool) -> dict[str, int] | None:
        """A pass if one is due (see :meth:`due`); its deletions per rule."""
        return self.run() if self.due(idle) else None

    def run(self) -> dict[str, int]:
        """One pass: batches until nothing is left to prune or the pass's time is up."""
        self._last_pass = started = self.clock()
        deleted: Counter[str] = Counter()
        pending = dict(self._rules())
        while pending and self.clock() - started < self.config.pass_seconds:
            for name, rule in list(pending.items()):
                with self.fenced() as conn:
                    n = rule(conn)
                deleted[name] += n
                if n < self.config.batch_rows:  # nothing more for this rule now
                    del pending[name]
        self.deleted.update(deleted)
        if sum(deleted.values()):
            log.info("retention: deleted %s", dict(deleted))
        return dict(deleted)

    def _rules(self) -> list[tuple[str, Callable[[Connection], int]]]:
        c, now, batch = self.config, self.now(), self.config.batch_rows
        rules: list[tuple[str, Callable[[Connection], int]]] = [
            ("teacher_decisions", lambda conn: retention.prune_decisions(
                conn, now - c.decision_days * DAY, c.decision_rows, batch)),
            ("evaluations", lambda conn: retention.prune_evaluations(conn, batch)),
            ("control_commands", lambda conn: retention.prune_commands(
                conn, now - c.command_days * DAY, batch)),
        ]  # fmt: skip
        if c.retired_probes:
            rules.append(
                ("probe_results", lambda conn: retention.prune_retired_probe_results(conn, batch))
            )
        return rules

    def state_dict(self) -> dict[str, Any]:
        """What the learner's status shows: rows deleted per rule since it started."""
        return {"deleted": dict(self.deleted)}
