"""Authentication before anything else: no body read, no pooled connection for strangers.

A pure ASGI middleware in front of the app. For every ``/v1/`` request it reads the bearer
key from the headers and resolves it (memory first; a database lookup runs on a small,
separate thread limiter so that a flood of made-up keys cannot take the connection pool
or the thread pool that ingestion and reads need). Unauthenticated requests get 401 (or
429 once their address failed too often) before the route's dependencies open a
connection or the body is read; authenticated ones carry their principal in
``scope["state"]["principal"]`` for the scope checks in :mod:`server.api.deps`.
"""

from __future__ import annotations

import math

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.errors import error_response
from server.api.middleware import HttpMiddleware
from server.auth.keys import Authenticator, FailureLimiter

PROTECTED_PREFIX = "/v1/"
# Concurrent database lookups of uncached keys: small, since each holds a pooled connection.
LOOKUP_CONCURRENCY = 2


class AuthMiddleware(HttpMiddleware):
    """401 / 429 for unauthenticated ``/v1/`` requests, before the route runs."""

    # Only the API needs a key; other paths (health, metrics, the dashboard) are open.
    path_prefix = PROTECTED_PREFIX

    def __init__(self, app: ASGIApp, limiter: FailureLimiter) -> None:
        super().__init__(app)
        self.limiter = limiter
        self._lookups = anyio.CapacityLimiter(LOOKUP_CONCURRENCY)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let the request through with its principal, or answer 401 / 429 instead."""
        authenticator: Authenticator = scope["app"].state.lifelong.authenticator
        address = (scope.get("client") or ("unknown", 0))[0]
        key = _bearer_key(scope)
        if key is None:
            await self._deny(scope, receive, send, address, missing=True)
            return
        known, principal = authenticator.cached(key)
        if not known:
            throttle = not authenticator.recently_valid(key)
            wait = self.limiter.retry_after(address) if throttle else 0.0
            if wait > 0:
                await _throttled(scope, receive, send, wait)
                return
            principal = await anyio.to_thread.run_sync(
                authenticator.authenticate, key, limiter=self._lookups
            )
        if principal is None:
            await self._deny(scope, receive, send, address, missing=False)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, address: str, missing: bool
    ) -> None:
        self.limiter.failed(address)
        message = (
            "missing API key: send 'Authorization: Bearer <key>'"
            if missing
            else "invalid or revoked API key"
        )
        response = error_response(
            401, message, headers={"WWW-Authenticate": "Bearer"}, code="invalid_api_key"
        )
        await response(scope, receive, send)


def _bearer_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            return key if scheme.lower() == "bearer" and key else None
    return None


async def _throttled(scope: Scope, receive: Receive, send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    response = error_response(
        429,
        f"too many failed authentications from this address; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
        code="rate_limit_exceeded",
    )
    await response(scope, receive, send)
