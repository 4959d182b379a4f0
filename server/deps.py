"""FastAPI dependencies: application state, database connections and scoped auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

from learner.store.ingest import IngestLimits
from learner.store.keys import Principal
from server.auth import Authenticator
from server.inference import InferenceEngine
from server.settings import Settings


@dataclass
class AppState:
    """The heavy objects of one app instance, made once in the lifespan."""

    settings: Settings
    engine: Engine
    authenticator: Authenticator
    ingest_limits: IngestLimits
    inference: InferenceEngine | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.lifelong
    return state


State = Annotated[AppState, Depends(get_state)]


def get_read_conn(state: State) -> Iterator[Connection]:
    with state.engine.connect() as conn:
        yield conn


ReadConn = Annotated[Connection, Depends(get_read_conn)]

_bearer = HTTPBearer(auto_error=False)


def _authenticate(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = state.authenticator.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that admits keys of ``scope`` or a higher one."""

    def check(principal: Annotated[Principal, Depends(_authenticate)]) -> Principal:
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
