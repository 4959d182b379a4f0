"""Series read from the store when Prometheus scrapes: what the learner and the data did.

The learner is a separate process (often on another host), so its progress is read where
it writes it: the lease row's status (step, loss, tokens/s: what ``GET /v1/learner``
shows), teacher decisions, adapter versions with their gate reports, and the registry's
event log; examples are counted per bucket. Each scrape costs a handful of grouped
queries on one pooled connection, and their result is reused for ``CACHE_SECONDS``, so a
burst of scrapes of the (keyless) endpoint reads the store once.

Each group of series is read on its own (a *section*): one that fails (a locked table, a
malformed row) is logged and left out, and the others are still exported, with
``lifelong_store_scrape_success{section}`` saying which were read. A gate report never
changes once written, so its verdict is parsed once per version and remembered.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection

from learner.evaluation.gate import RETENTION
from learner.model import registry
from learner.store import lease, stats
from learner.store.models import (
    REGISTRY_ACTIONS,
)

if TYPE_CHECKING:
    from server.api.deps import AppState

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0
GATE_VERDICTS = ("promote", "reject", "hold")  # what the gate decides (not "abandoned")
_CHUNK = 500  # versions per query when reading gate reports not seen yet

Section = Callable[[Connection], list[Metric]]


class StoreCollector(Collector):
    """A custom collector reading the store at scrape time (see the module docstring)."""

    def __init__(
        self, state: Callable[[], AppState | None], cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._state = state
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._fresh_until = -math.inf
        self._verdicts: dict[int, tuple[str, str] | None] = {}  # version -> (verdict, reason)

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        if state is None:  # the lifespan has not opened the app's state (or closed it)
            return []
        with self._lock:
            if time.monotonic() >= self._fresh_until:
                self._cached = self._read(state)
                self._fresh_until = time.monotonic() + self.cache_seconds
            cached = list(self._cached)
        return [*_queue_families(state), *cached]

    def _sections(self, state: AppState) -> dict[str, Section]:
        lease_seconds = state.settings.learner.lease_seconds
        return {
            "examples": _examples,
            "teacher": _teacher,
            "gate": self._gate,
            "registry": _registry,
            "learner": lambda conn: _learner(conn, lease_seconds),
        }

    def _read(self, state: AppState) -> list[Metric]:
        """Every section on one connection; a failed one is left out of the result."""
        sections = self._sections(state)
        families: list[Metric] = []
        read: dict[str, bool] = {}
        try:
            with state.engine.connect() as conn:
                for name, section in sections.items():
                    read[name] = _read_section(conn, name, section, families)
        except Exception as exc:  # no connection (or it broke): every section left unread
            log.warning("metrics: the store could not be read: %s", exc)
        success = GaugeMetricFamily(
            "lifelong_store_scrape_success",
            "1 when the section's series were read from the store in this scrape, else 0.",
            labels=["section"],
        )
        for name in sections:
            success.add_metric([name], 1.0 if read.get(name) else 0.0)
        return [*families, success]

    def _gate(self, conn: Connection) -> list[Metric]:
        """Versions per gate verdict and reason; reports not seen before are parsed once."""
        versions = stats.judged_versions(conn)
        missing = [v for v in versions if v not in self._verdicts]
        for start in range(0, len(missing), _CHUNK):
            reports = stats.gate_reports(conn, missing[start : start + _CHUNK])
            for version, report in reports.items():
                self._verdicts[version] = gate_verdict(report)
        judged = (self._verdicts.get(v) for v in versions)
        counts = Counter(verdict for verdict in judged if verdict is not None)
        family = CounterMetricFamily(
            "lifelong_gate_verdicts_total",
            "Candidate versions by the gate's verdict and its main reason.",
            labels=["verdict", "reason"],
        )
        for (verdict, reason), n in sorted(counts.items()):
            family.add_metric([verdict, reason], n)
        return [family]


def _read_section(conn: Connection, name: str, section: Section, into: list[Metric]) -> bool:
    """Run one section; on failure log it and roll back, so the next section can run."""
    try:
        into.extend(section(conn))
        return True
    # Any failure, not only the database's (a malformed row, say): a metrics scrape must
    # still export what it could read. The log line says what went wrong.
    except Exception as exc:
        log.warning("metrics: reading %s from the store failed: %s", name, exc)
        conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
        return False


def gate_verdict(report: Any) -> tuple[str, str] | None:
    """(verdict, reason) of a stored gate report; None for anything but a gate verdict.

    The reason is a short fixed word, never the report's free text, to bound the series:
    for a rejection the retention checks that failed (``forgetting``, ``alignment+nfr``);
    for a promotion ``gain``; for a hold why the gain check did not promote it
    (``below_min_gain``, ``no_evidence``, or ``active_changed`` when it passed but another
    version became active meanwhile).
    """
    if not isinstance(report, dict) or report.get("verdict") not in GATE_VERDICTS:
        return None
    verdict = str(report["verdict"])
    checks = [c for c in report.get("checks") or [] if isinstance(c, dict)]
    if verdict == "reject":
        return verdict, "+".join(sorted(_failed_retention(checks))) or "unknown"
    gain = next((c for c in checks if c.get("kind") == "gain"), None)
    if gain is None:
        return verdict, "unknown"
    if verdict == "promote":
        return verdict, "gain"
    if gain.get("passed"):
        return verdict, "active_changed"
    return verdict, "no_evidence" if gain.get("value") is None else "below_min_gain"


def _failed_retention(checks: list[dict[str, Any]]) -> set[str]:
    """The kinds of the retention checks that failed."""
    return {str(c["kind"]) for c in checks if c.get("kind") in RETENTION and not c.get("passed")}


# --- the sections ------------------------------------------------------------------------


def _per_bucket(name: str, documentation: str, rows: list[tuple[str, int]]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["bucket"])
    for bucket, n in rows:
        family.add_metric([bucket], n)
    return family


def _examples(conn: Connection) -> list[Metric]:
    rows = stats.examples_per_bucket(conn)
    doc = "Examples stored per bucket (train and probe; duplicates are not stored)."
    return [_per_bucket("lifelong_examples_ingested_total", doc, rows)]


def _teacher(conn: Connection) -> list[Metric]:
    rows = stats.decisions_per_bucket(conn)
    # No focus bucket: a rest, or a bucket since deleted.
    rests = sum(n for name, n in rows if name is None)
    focused = sorted((name, n) for name, n in rows if name is not None)
    doc = "Rounds in which the teacher chose the bucket as its focus."
    rested = CounterMetricFamily(
        "lifelong_teacher_rests_total", "Rounds in which the teacher chose to rest.", value=rests
    )
    return [_per_bucket("lifelong_teacher_decisions_total", doc, focused), rested]


def _registry(conn: Connection) -> list[Metric]:
    active = registry.active_version(conn)
    counts = stats.registry_event_counts(conn)
    events = CounterMetricFamily(
        "lifelong_registry_events_total",
        "Changes of the active version (promote, force, rollback) and learner resets.",
        labels=["action"],
    )
    for action in REGISTRY_ACTIONS:
        events.add_metric([action], int(counts.get(action, 0)))
    return [
        GaugeMetricFamily(
            "lifelong_active_version",
            "The adapter version being served (0: the base model).",
            value=active or 0,
        ),
        CounterMetricFamily(
            "lifelong_rollbacks_total",
            "Rollbacks of the active version.",
            value=int(counts.get("rollback", 0)),
        ),
        events,
    ]


def _learner(conn: Connection, lease_seconds: float) -> list[Metric]:
    """Liveness and the lease holder from the lease row; progress from its status, as the
    learner last reported it (the same data as ``GET /v1/learner``)."""
    row = lease.read_lease(conn)
    age = lease.heartbeat_age(conn) if row is not None else None
    up = age is not None and age < lease_seconds
    families: list[Metric] = [
        GaugeMetricFamily(
            "lifelong_learner_up",
            "1 when the learner's heartbeat is fresher than the lease time, else 0.",
            value=1.0 if up else 0.0,
        )
    ]
    holder = InfoMetricFamily("lifelong_learner_lease", "Who holds the training lease.")
    heartbeat = GaugeMetricFamily(
        "lifelong_learner_heartbeat_age_seconds",
        "Seconds since the learner's last heartbeat (by the database's clock).",
    )
    if row is not None and age is not None:
        holder.add_metric([], {"holder": row.holder})
        heartbeat.add_metric([], age)
    families += [holder, heartbeat, *_progress(row.state if row is not None else {}, up)]
    return families


def _progress(status: dict[str, Any], up: bool) -> list[Metric]:
    steps = CounterMetricFamily(
        "lifelong_training_steps_total", "Training steps the learner has taken."
    )
    loss = GaugeMetricFamily("lifelong_training_loss", "The loss of the latest training step.")
    speed = GaugeMetricFamily(
        "lifelong_training_tokens_per_second",
        "Training throughput (moving average; 0 while the learner is down).",
    )
    if (step := _number(status.get("step"))) is not None:
        steps.add_metric([], step)
    if (last := _number(status.get("last_loss"))) is not None:
        loss.add_metric([], last)
    if (tokens := _number(status.get("tokens_per_second"))) is not None:
        # A dead learner's last throughput is stale: it trains nothing now.
        speed.add_metric([], tokens if up else 0.0)
    return [steps, loss, speed]


def _number(value: Any) -> float | None:
    """A finite number from the stored status, else None (missing or malformed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _queue_families(state: AppState) -> list[Metric]:
    """The inference queue of this process, read live (it is not in the store)."""
    queue = state.inference_queue
    return [
        GaugeMetricFamily(
            "lifelong_inference_queue_depth",
            "Completions waiting or running in this server's inference queue.",
            value=queue.pending,
        ),
        GaugeMetricFamily(
            "lifelong_inference_queue_capacity",
            "Completions the queue holds before refusing more (429).",
            value=queue.max_pending,
        ),
    ]
