"""The ``lifelong`` command line; ``main`` is the entry point (``python -m server.cli``)."""

from server.cli.app import app, main
from server.cli.local import SignalAwareServer, ensure_suite

__all__ = ["SignalAwareServer", "app", "ensure_suite", "main"]
