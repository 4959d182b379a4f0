"""Logging for ``lifelong serve`` and ``lifelong learner``: readable text by default, JSON
lines (``--log-json`` or ``LIFELONG_LOG_JSON``) for log collectors.

A JSON line holds ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, the
``component`` (server or learner, which share one stderr under ``lifelong serve``), every
extra field passed with ``extra={...}``, and ``exception`` with the traceback if any.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

#: Environment variables through which the learner child inherits the server's choice.
LOG_JSON_ENV = "LIFELONG_LOG_JSON"
LOG_LEVEL_ENV = "LIFELONG_LOG_LEVEL"
TEXT_FORMAT = "%(asctime)s lifelong {component} %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD_ATTRS = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", (), None)),
        "message",
        "asctime",
        "taskName",
    }
)
# Chatty libraries whose INFO lines say nothing an operator needs.
_QUIET_LOGGERS = ("alembic", "httpx", "httpcore", "urllib3", "filelock")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that JSON cannot hold is shown as its text, never lost.
        return json.dumps(entry, ensure_ascii=False, default=str)


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean environment variable (1/true/yes/on, case-insensitive)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def configure_logging(
    json_lines: bool,
    level: int | str = logging.INFO,
    component: str = "server",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as text or JSON
    lines, replacing any handler configured before; returns the installed handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLineFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(component=component)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python's own warnings (deprecations in libraries, say) go through the same handler.
    logging.captureWarnings(True)
    return handler
