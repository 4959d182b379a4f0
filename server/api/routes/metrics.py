"""Prometheus metrics at ``GET /metrics``, in the text format (or OpenMetrics when asked).

The endpoint is public, like ``/healthz``: Prometheus scrapers conventionally scrape
without credentials, and AuthMiddleware guards only ``/v1/``. What it shows is aggregate
(counts, rates, the active version number) plus bucket names and the lease holder's
``host:pid``; deployments that consider those private keep ``/metrics`` off the public
network at their reverse proxy, as is usual for metrics endpoints. A public endpoint must
stay cheap under a flood: scrapes run one at a time on a thread of their own and reuse a
store reading younger than a second (:mod:`server.observability.collector`), so they never take the
thread pool or connections that ingestion and reads need.

Series (see :mod:`server.observability.metrics`, :mod:`server.observability.middleware` and
:mod:`server.observability.collector` for how each is counted):

- ``lifelong_http_requests_total``, ``lifelong_http_request_duration_seconds``
  {route, method, status}: this server's requests, by route template;
- ``lifelong_examples_ingested_total`` {bucket}: stored examples;
  ``lifelong_duplicates_total`` {bucket}: resubmissions seen by this server;
- ``lifelong_training_steps_total``, ``lifelong_training_loss``,
  ``lifelong_training_tokens_per_second``: the learner's progress;
- ``lifelong_teacher_decisions_total`` {bucket}, ``lifelong_teacher_rests_total``;
- ``lifelong_gate_verdicts_total`` {verdict, reason}: candidate versions;
- ``lifelong_active_version`` (0: the base model), ``lifelong_rollbacks_total``,
  ``lifelong_registry_events_total`` {action};
- ``lifelong_learner_up``, ``lifelong_learner_lease_info`` {holder},
  ``lifelong_learner_heartbeat_age_seconds``;
- ``lifelong_inference_queue_depth``, ``lifelong_inference_queue_capacity``;
- ``lifelong_store_scrape_success`` {section}, and the process's ``process_*`` and
  ``python_gc_*`` series.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client.exposition import choose_encoder

from server.observability.metrics import Metrics

router = APIRouter(tags=["health"])
OPENMETRICS = "application/openmetrics-text"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {OPENMETRICS: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, app_metrics: Metrics) -> Response:
    """Prometheus metrics of this server and of the learner's work (no key needed)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await anyio.to_thread.run_sync(
        encoder, app_metrics.registry, limiter=app_metrics.scrape_limiter
    )
    return Response(body, media_type=content_type)
