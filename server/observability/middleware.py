"""Request counts and latency for Prometheus, as a pure ASGI middleware.

It is the outermost of the app's own middleware, so it sees every final status code,
those of :class:`server.auth.middleware.AuthMiddleware` (401, 429) and of the body size
limit (413) included; only the 500 that Starlette's error middleware writes for an
unhandled exception is outside it, and is counted as 500 here from the exception.

Requests are labelled with the path template of the route that served them
(``/v1/adapters/{version}``), never the raw path, so that the number of series stays
bounded whatever paths clients send. A request turned away before routing (a bad key)
is matched against the routes afterwards to find its template; a path no route knows is
labelled ``unmatched``. The duration runs to the end of the response body, so a streamed
completion counts for as long as it streams.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.middleware import HttpMiddleware
from server.observability.metrics import AppMetrics

UNMATCHED = "unmatched"
# Recorded when the app ended without starting a response (the client went away first).
NO_RESPONSE = 0


class MetricsMiddleware(HttpMiddleware):
    """Counts every HTTP request by route template, method and status, with its duration."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics
        self._routes: list[Any] | None = None  # the app's routes, flattened on first use

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, noting its status and duration however it ends."""
        started = time.perf_counter()
        status = NO_RESPONSE

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            # Starlette's error middleware, outside this one, answers 500 (unless the
            # response had started: then the client saw that status, cut short).
            status = status or 500
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(self._template(scope), scope["method"], status, seconds)

    def _template(self, scope: Scope) -> str:
        """The path template of the route for this request, or ``unmatched``."""
        template = getattr(scope.get("route"), "path_format", None)
        if isinstance(template, str):
            return template  # routed: the router noted its route in the scope
        if self._routes is None:
            self._routes = list(_leaf_routes(scope["app"].router.routes))
        return _match_template(self._routes, scope)


def _leaf_routes(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    """Every route of the app with its full path template, routers included flattened.

    Newer FastAPI keeps an included router as one branch of the app's routes and lists its
    routes, with their full paths, through ``iter_route_contexts``; older versions copy them
    into the app's list, which is flat already.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI: included routes are copied
        return routes
    return iter_route_contexts(routes)


def _match_template(routes: Sequence[Any], scope: Scope) -> str:
    """Match a request that never reached the router against the routes, as the router
    would have: the first full match, else the first partial one (a wrong method)."""
    probe = dict(scope)  # matching may note things in the scope; keep the request's own
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(probe)
        template = getattr(route, "path_format", None)
        if not isinstance(template, str):
            continue
        if match is Match.FULL:
            return template
        if match is Match.PARTIAL and partial is None:
            partial = template
    return partial or UNMATCHED
