"""Uniform JSON errors, in the shape OpenAI's API uses (so that its clients parse them):
``{"error": {"message": ..., "type": ..., "param": ..., "code": ..., "details": [...]}}``.

``type`` follows from the status (``invalid_request_error``, ``authentication_error``,
``rate_limit_error``, ...); ``param`` names the offending field where one is to blame and
``code`` is a stable machine-readable reason where there is one (both may be null);
``details`` (validation errors only) lists every problem. Validation problems become one
readable message that names the offending field, so that a client sees what to fix
without reading pydantic's structures.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from learner.fsutil import is_no_space
from learner.store.ingest import IngestError
from server.api.middleware import HttpMiddleware

log = logging.getLogger(__name__)


#: OpenAI's error ``type`` for each status (any other 4xx: invalid_request_error).
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


class ApiError(StarletteHTTPException):
    """An HTTP error with OpenAI's ``param`` (the field to blame) and ``code`` (a stable
    reason such as ``model_not_found``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.param = param
        self.code = code


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    details: list[Any] | None = None,
) -> dict[str, Any]:
    """The ``{"error": {...}}`` object (also sent as a server-sent event mid-stream)."""
    body: dict[str, Any] = {
        "message": message,
        "type": error_type(status),
        "param": param,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(
    status: int,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code, details=details)
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    if errors and errors[0].get("type") == "json_invalid":
        ctx = errors[0].get("ctx", {})
        return f"request body is not valid JSON: {ctx.get('error', 'parse error')}"
    shown = [f"{_location(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(shown) + more


def _not_json(request: Request, errors: list[dict[str, Any]]) -> bool:
    """A body sent as another media type reaches validation as a non-object."""
    content_type = request.headers.get("content-type", "")
    return (
        bool(content_type)
        and "json" not in content_type
        and any(tuple(e.get("loc", ())) == ("body",) for e in errors)
    )


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in raw]
    if _not_json(request, raw):
        message = "request body must be JSON, sent with 'Content-Type: application/json'"
        return error_response(415, message, errors[:20])
    param = _location(tuple(raw[0].get("loc", ()))) if raw else None
    return error_response(422, describe_validation_errors(raw), errors[:20], param=param)


async def _http_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    param, code = getattr(exc, "param", None), getattr(exc, "code", None)
    return error_response(exc.status_code, str(exc.detail), headers=headers, param=param, code=code)


async def _ingest_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IngestError)
    return error_response(exc.status, str(exc))


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error; the request was not applied")


#: PostgreSQL's SQLSTATE for "disk full".
_PG_DISK_FULL = "53100"


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed for want of space: SQLite's "database or disk is full",
    PostgreSQL's disk_full, or an OSError ENOSPC (the data dir's filesystem)."""
    orig = getattr(exc, "orig", None)
    if orig is not None and getattr(orig, "sqlstate", None) == _PG_DISK_FULL:
        return True
    return is_no_space(exc) or (orig is not None and is_no_space(orig))


def _disk_full() -> JSONResponse:
    log.error("out of disk space: the request was not applied")
    return error_response(
        507,
        "insufficient storage: the service's disk is full; nothing of this request was "
        "stored. Retry once space has been freed",
        headers={"Retry-After": "30"},
        code="disk_full",
    )


async def _database_busy(_: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        return _disk_full()
    log.warning("database unavailable or busy: %s", exc)
    return error_response(
        503, "the database is busy or unreachable; retry shortly", headers={"Retry-After": "2"}
    )


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    return _disk_full() if is_disk_full(exc) else await _unhandled(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(IngestError, _ingest_handler)
    # SQLite "database is locked" after the busy timeout, a lost PostgreSQL connection, or
    # an exhausted connection pool: the request was not applied and may be retried.
    app.add_exception_handler(OperationalError, _database_busy)
    app.add_exception_handler(PoolTimeoutError, _database_busy)
    # A full disk (the database's or the data dir's): 507, nothing applied.
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unhandled)


class BodySizeLimit(HttpMiddleware):
    """ASGI middleware answering 413 when a request body exceeds its route's limit.

    ``POST /v1/tasks`` (batches of examples) may send ``bulk_bytes``; every other route
    ``max_bytes``, so that a small request cannot carry a large body.
    """

    BULK_ROUTES = frozenset({("POST", "/v1/tasks")})

    def __init__(self, app: ASGIApp, max_bytes: int, bulk_bytes: int | None = None) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.bulk_bytes = bulk_bytes if bulk_bytes is not None else max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 for a declared or an actual body over the route's limit."""
        bulk = (scope["method"], scope["path"].rstrip("/")) in self.BULK_ROUTES
        limit = self.bulk_bytes if bulk else self.max_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, receive, send, limit)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(f"request body is larger than {limit} bytes")
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await _reject(scope, receive, send, limit)


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(413, f"request body is larger than {limit} bytes")
    await response(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """A body that outgrows the limit while it is read (no or a false Content-Length).

    An HTTP exception, because FastAPI turns any other error raised while it reads the body
    into "400 There was an error parsing the body"; this one it passes on to the handler.
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message)
