"""The common frame of the app's own pure ASGI middleware (body size limit, authentication,
metrics).

Each one works on HTTP requests and lets lifespan and websocket scopes, and any request it
does not concern itself with, through to the app untouched; that pass-through lives here,
once, in :class:`HttpMiddleware`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """A pure ASGI middleware that handles HTTP requests and passes on everything else.

    Subclasses implement :meth:`handle`, and may narrow :attr:`path_prefix`; a scope that
    is not HTTP, or whose path lies outside the prefix, goes straight to the wrapped app.
    """

    #: The paths handled (by default every one: "" prefixes any path, even ``*``).
    path_prefix = ""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an HTTP request within :attr:`path_prefix`, calling ``self.app`` as needed."""
        raise NotImplementedError
