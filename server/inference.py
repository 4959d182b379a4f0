"""Serving completions from the base model and its adapter versions, with hot swaps.

The base model is loaded once (lazily, on a background thread, since the builtin model may
still be bootstrapping). Adapter versions are loaded into one ``PeftModel`` under names
``v<N>`` and kept in a small LRU. A watcher thread polls the registry's active version and
loads a newly promoted adapter *before* switching the pointer, so requests never wait on a
swap and no request fails during one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from learner import registry
from learner.config import GenerationParams

if TYPE_CHECKING:
    from peft import PeftModel

# torch, transformers and peft are imported when the model loads, not with the app: an
# API-only server (ingestion, registry) starts in a fraction of the time.

log = logging.getLogger(__name__)
_VERSIONED = re.compile(r"lifelong@([0-9]{1,9})\Z", re.ASCII)
MAX_LOADED_ADAPTERS = 8


class ModelNotReady(RuntimeError):
    """The base model is still loading (or failed to load)."""


class UnknownModel(LookupError):
    """The requested model name or version does not exist or may not be served."""


def parse_model_name(name: str) -> tuple[str, int | None]:
    """``lifelong`` -> active, ``lifelong@N`` -> version N, ``base`` -> the base model."""
    if name in ("lifelong", "base"):
        return name, None
    match = _VERSIONED.match(name)
    if match:
        return "version", int(match.group(1))
    raise UnknownModel(f"unknown model {name!r}: use 'lifelong', 'lifelong@<version>' or 'base'")


class InferenceEngine:
    """Thread-safe completions over the base model and any servable adapter version."""

    def __init__(
        self,
        engine: Engine,
        resolve_model_dir: Callable[[], Path],
        device: str = "auto",
        poll_seconds: float = 0.2,
        num_threads: int = 1,
    ) -> None:
        self.engine = engine
        self._resolve_model_dir = resolve_model_dir
        self.device_spec = device
        self.num_threads = num_threads
        self.poll_seconds = poll_seconds
        self.active: int | None = None
        self._model: Any = None
        self._peft: PeftModel | None = None
        self.tokenizer: Any = None
        self._loaded: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.RLock()  # one generation or adapter change at a time
        self._ready = threading.Event()
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    def start_once(self) -> None:
        """Start loading on a background thread (idempotent; the first request calls it)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._load_and_watch, name="inference-loader", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching the registry; waits for the loader thread unless it is mid-load."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _load_and_watch(self) -> None:
        try:
            import torch

            from learner.modeling import load_base, pick_device

            torch.set_num_threads(self.num_threads)

            model, tokenizer = load_base(self._resolve_model_dir(), pick_device(self.device_spec))
            model.eval()
            with self._lock:
                self._model, self.tokenizer = model, tokenizer
            self._ready.set()
        except Exception as exc:  # reported to clients as 503 with the reason
            log.exception("loading the base model failed")
            self._error = f"{type(exc).__name__}: {exc}"
            return
        while not self._stop.is_set():
            try:
                self.refresh_active()
            except Exception:
                log.exception("refreshing the active adapter failed; retrying")
            self._stop.wait(self.poll_seconds)

    def refresh_active(self) -> None:
        """Load the registry's active version if it changed, then switch to it."""
        with self.engine.connect() as conn:
            active = registry.active_version(conn)
        if active != self.active:
            if active is not None:
                self._ensure_loaded(active)
            self.active = active
            log.info("now serving %s", "base" if active is None else f"v{active}")

    # --- adapters ----------------------------------------------------------------------

    def _ensure_loaded(self, version: int) -> str:
        with self._lock:
            name = f"v{version}"
            if version in self._loaded:
                self._loaded.move_to_end(version)
                return name
            with self.engine.connect() as conn:
                row = registry.get_version(conn, version)
            if row is None or row.status == "rejected":
                raise UnknownModel(f"adapter version {version} does not exist or was rejected")
            assert self._model is not None
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self._model, row.path, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(row.path, adapter_name=name)
            self._loaded[version] = name
            self._evict()
            return name

    def _evict(self) -> None:
        assert self._peft is not None
        while len(self._loaded) > MAX_LOADED_ADAPTERS:
            victim = next(v for v in self._loaded if v != self.active)
            self._peft.delete_adapter(self._loaded.pop(victim))

    # --- completions -------------------------------------------------------------------

    def complete(
        self, model_name: str, prompts: list[str], params: GenerationParams
    ) -> tuple[list[tuple[str, str]], str]:
        """Complete ``prompts`` with the named model; returns results and the resolved name."""
        from learner.modeling import generate

        kind, version = parse_model_name(model_name)
        self.start_once()
        if not self._ready.is_set():
            reason = self._error or "the base model is still loading (first start trains it)"
            raise ModelNotReady(reason)
        if kind == "lifelong":
            version = self.active
        with self._lock:
            assert self._model is not None and self.tokenizer is not None
            if version is None:
                if self._peft is None:
                    return generate(self._model, self.tokenizer, prompts, params), "base"
                with self._peft.disable_adapter():
                    return generate(self._peft, self.tokenizer, prompts, params), "base"
            name = self._ensure_loaded(version)
            assert self._peft is not None
            self._peft.set_adapter(name)
            return generate(self._peft, self.tokenizer, prompts, params), f"lifelong@{version}"

    def count_tokens(self, text: str) -> int:
        assert self.tokenizer is not None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
