"""FastAPI dependencies: application state, database connections and scoped auth."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

from learner.store.ingest import IngestLimits
from learner.store.keys import Principal
from server.auth.keys import Authenticator
from server.process.settings import Settings
from server.serving.engine import InferenceEngine
from server.serving.queue import InferenceQueue


@dataclass
class AppState:
    """The heavy objects of one app instance, made once in the lifespan."""

    settings: Settings
    engine: Engine
    authenticator: Authenticator
    ingest_limits: IngestLimits
    inference: InferenceEngine | None = None
    inference_queue: InferenceQueue = field(default_factory=lambda: InferenceQueue(8))


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.lifelong
    return state


State = Annotated[AppState, Depends(get_state)]


def get_read_conn(state: State) -> Iterator[Connection]:
    with state.engine.connect() as conn:
        yield conn


ReadConn = Annotated[Connection, Depends(get_read_conn)]

_bearer = HTTPBearer(auto_error=False)


async def _authenticate(
    request: Request,
    # Declared for the OpenAPI security scheme; the key itself was checked by
    # :class:`server.auth.middleware.AuthMiddleware` before the body was read.
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # only reachable if the middleware is not installed
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys of ``scope`` or a higher one."""

    async def check(principal: Annotated[Principal, Depends(_authenticate)]) -> Principal:
        if not principal.allows(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this API key has scope {principal.scope!r}; this call needs {scope!r}",
            )
        return principal

    return check


Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("submit"))]
Admin = Annotated[Principal, Depends(require("admin"))]


async def reject_unknown_query(request: Request) -> None:
    """422 for query parameters the route does not take (a misspelt ``limt=`` is an error,
    not silently the default), as unknown body fields are (StrictModel); also for a
    parameter given more than once."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    allowed = _query_names(route)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this call takes: {takes}",
        )
    # Every query parameter of this API is a single value: a repeated one would silently
    # be read as its last occurrence.
    repeated = sorted({name for name in request.query_params if _count(request, name) > 1})
    if repeated:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query parameter(s) {', '.join(map(repr, repeated))} given more than once; "
            "each takes a single value",
        )


def _count(request: Request, name: str) -> int:
    return len(request.query_params.getlist(name))


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # id(route) -> names (routes live as long)


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters of the route and of every dependency it has."""
    cached = _QUERY_NAMES.get(id(route))
    if cached is not None:
        return cached
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    _QUERY_NAMES[id(route)] = frozenset(names)
    return _QUERY_NAMES[id(route)]
