"""The HTTP client of the remote commands: where the server is, which key to send, and
errors turned into one readable line (:class:`CliError`) instead of a traceback.

The server is ``--url`` / ``LIFELONG_URL`` (default ``http://127.0.0.1:8000``, where
``lifelong serve`` listens by default). The key is ``LIFELONG_API_KEY``, else the
``admin.key`` that the server wrote into its data directory (``--data-dir`` /
``LIFELONG_DATA_DIR``, default ``./lifelong-data``) at its first start.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.auth.keys import ADMIN_KEY_FILE

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = Path("./lifelong-data")
API_KEY_ENV = "LIFELONG_API_KEY"
# Busy answers (429 inference queue full, 503 database busy) are retried this often.
BUSY_RETRIES = 5
MAX_RETRY_WAIT_S = 10.0


class CliError(Exception):
    """A failure to show the user as one message (exit code 1)."""


class ApiError(CliError):
    """The server answered with an error status; ``message`` is its error message."""

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path} failed ({status}): {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where the server is and how to authenticate to it."""

    url: str
    data_dir: Path
    timeout: float = 30.0

    def api_key(self) -> str:
        """``LIFELONG_API_KEY``, else the data directory's ``admin.key``."""
        key = os.environ.get(API_KEY_ENV, "").strip()
        if key:
            return key
        path = self.data_dir / ADMIN_KEY_FILE
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            raise CliError(
                f"no API key: set {API_KEY_ENV}, or point --data-dir (LIFELONG_DATA_DIR) at the "
                f"server's data directory, which holds {ADMIN_KEY_FILE} (not found: {path})"
            ) from None
        except OSError as exc:
            raise CliError(f"cannot read the API key from {path}: {exc}") from None
        if not key:
            raise CliError(f"{path} is empty; set {API_KEY_ENV} instead")
        return key


def error_message(response: httpx.Response) -> str:
    """The server's ``{"error": {"message": ...}}``, or the raw body when it has none."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("detail"), str):
            return str(body["detail"])
    return str(body)[:500]


class ApiClient:
    """A thin httpx wrapper: JSON in, JSON out, :class:`CliError` on any failure."""

    def __init__(self, target: Target, authenticate: bool = True) -> None:
        headers = {"Authorization": f"Bearer {target.api_key()}"} if authenticate else {}
        self.url = target.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=target.timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, json: Any = None, **params: Any) -> httpx.Response:
        """Send a request (retrying busy answers); the response, whatever its status."""
        for attempt in range(BUSY_RETRIES + 1):
            response = self._send(method, path, json, params)
            if response.status_code not in (429, 503) or attempt == BUSY_RETRIES:
                return response
            time.sleep(_retry_after(response, attempt))
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, json: Any, params: dict[str, Any]) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            return self._http.request(method, path, json=json, params=query or None)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot connect to the lifelong server at {self.url} ({exc}); is "
                "`lifelong serve` running there? Set --url or LIFELONG_URL"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"{method} {path}: no answer from {self.url} in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"{method} {path} to {self.url} failed: {exc}") from None

    def call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """The JSON body of a successful answer; :class:`ApiError` otherwise."""
        response = self.request(method, path, json, **params)
        if response.is_error:
            raise ApiError(response.status_code, error_message(response), method, path)
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {path}: the server's answer is not JSON") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)

    def post(self, path: str, json: Any = None) -> Any:
        return self.call("POST", path, json)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """The server's Retry-After (seconds), else an exponential back-off."""
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 0.5 * 2**attempt
    return max(0.0, min(wait, MAX_RETRY_WAIT_S))
