"""The Prometheus metrics of one app: its registry and the series the server counts itself.

Every app gets its own :class:`prometheus_client.CollectorRegistry` (kept in
``app.state.metrics``), never the process-wide default one, so that several apps in one
process (the tests make many) do not clash over metric names or share counts.

Two kinds of series live here:

- what only this server process sees, counted as it happens: HTTP requests and their
  latency (by :class:`server.observability.middleware.MetricsMiddleware`) and duplicate
  submissions (by ``POST /v1/tasks``: the store keeps no record of them);
- what the learner (a separate process, possibly on another host) does, read from the
  store when Prometheus scrapes (:class:`server.observability.collector.StoreCollector`).

Counters of this process start at zero when it starts, as Prometheus expects of counters;
with several servers each exports its own and a query sums them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from server.api.deps import AppState
from server.observability.collector import StoreCollector

# Request latency buckets in seconds: the default ones plus the long tail of completions
# (generation on a CPU, server-sent streams) that the defaults lump together above 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Methods kept as a label value; anything else a client sends is counted as "other", so
# that made-up methods cannot grow the number of series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class AppMetrics:
    """The registry of one app and the series the server process counts itself."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    duplicates: Counter
    store: StoreCollector
    # One scrape at a time reads the store, on a thread of its own: a burst of scrapes (the
    # endpoint needs no key) waits on the event loop instead of taking the shared thread
    # pool that ingestion and reads need.
    scrape_limiter: anyio.CapacityLimiter

    @classmethod
    def create(cls, state: Callable[[], AppState | None]) -> AppMetrics:
        """A fresh registry with every series; ``state`` gives the app's state once its
        lifespan has opened it (None before)."""
        registry = CollectorRegistry()
        requests = Counter(
            "lifelong_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        latency = Histogram(
            "lifelong_http_request_duration_seconds",
            "Time from receiving an HTTP request to the end of its response.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        duplicates = Counter(
            "lifelong_duplicates_total",
            "Submitted examples that were already in their bucket (counted by this server).",
            ["bucket"],
            registry=registry,
        )
        store = StoreCollector(state)
        registry.register(store)
        # The process's CPU, memory and file descriptors, as the default registry has them.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        return cls(registry, requests, latency, duplicates, store, anyio.CapacityLimiter(1))

    def observe_request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """Count one answered request and its duration."""
        method = method if method in KNOWN_METHODS else "other"
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def count_duplicates(self, bucket: str, duplicates: int) -> None:
        """Count a submission's duplicates (the label appears with the bucket's first
        submission, so that a bucket without duplicates shows 0 rather than nothing)."""
        self.duplicates.labels(bucket).inc(duplicates)


def install_metrics(app: FastAPI) -> AppMetrics:
    """Make the app's metrics and keep them in ``app.state.metrics``."""
    metrics = AppMetrics.create(lambda: getattr(app.state, "lifelong", None))
    app.state.metrics = metrics
    return metrics


def get_metrics(request: Request) -> AppMetrics:
    """A dependency: the metrics of the app serving the request."""
    metrics: AppMetrics = request.app.state.metrics
    return metrics


Metrics = Annotated[AppMetrics, Depends(get_metrics)]
