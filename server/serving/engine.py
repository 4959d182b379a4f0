"""Serving completions from the base model and its adapter versions, with hot swaps.

The base model is loaded once (lazily, on a background thread, since the builtin model may
still be bootstrapping). Adapter versions are loaded into one ``PeftModel`` under names
``v<N>`` and kept in a small LRU. A watcher thread polls the registry's active version and
loads a newly promoted adapter *before* switching the pointer, so requests never wait on a
swap and no request fails during one.

Nothing is loaded without its sha256 being checked (:func:`learner.model.registry.verify_version`,
cached by file size and mtime, so the per-request check costs a ``stat``). A version that
cannot be served (missing, corrupt, pending, retired) answers with
:class:`~learner.model.registry.VersionUnavailable`; a rejected version answers only to admins.
If the newly active version cannot be loaded, the watcher keeps serving what it served
before and says so once, not at every poll.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from learner.config import GenerationParams
from learner.model import registry

if TYPE_CHECKING:
    from peft import PeftModel

    from learner.model.generate import Decoder, Delivery, Generated, OnDelta

# torch, transformers and peft are imported when the model loads, not with the app: an
# API-only server (ingestion, registry) starts in a fraction of the time.

log = logging.getLogger(__name__)
_VERSIONED = re.compile(r"lifelong@([0-9]{1,9})\Z", re.ASCII)
MAX_LOADED_ADAPTERS = 8


class ModelNotReady(RuntimeError):
    """The base model is still loading (or failed to load)."""


class RequestTooLarge(ValueError):
    """A completion request beyond the model's context or the per-request token budget."""


class UnknownModel(LookupError):
    """The requested model name or version does not exist or may not be served to the caller."""


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
        data_dir: Path = Path("."),
    ) -> None:
        self.engine, self._resolve_model_dir = engine, resolve_model_dir
        self.device_spec, self.num_threads, self.poll_seconds = device, num_threads, poll_seconds
        self.data_dir = data_dir  # version paths are stored relative to it
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
        # Whether ``active`` has ever matched the registry (until then, ``lifelong`` has
        # nothing of its own to fall back on), and why the registry's active version is
        # not the one served, if it is not.
        self._synced = False
        self._unavailable: str | None = None
        self._warned: set[tuple[int | None, str]] = set()
        self._load_failures: set[int] = set()

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

    @property
    def unavailable(self) -> str | None:
        """Why the registry's active version is not served (None when it is)."""
        return self._unavailable

    def _load_and_watch(self) -> None:
        try:
            model, tokenizer = self._load_model(self._resolve_model_dir())
            with self._lock:
                self._model, self.tokenizer = model, tokenizer
        except Exception as exc:  # reported to clients as 503 with the reason
            log.exception("loading the base model failed")
            self._error = f"{type(exc).__name__}: {exc}"
            return
        # Follow the registry once before accepting requests, so that the first
        # ``lifelong`` request is not answered by the base model while v<N> is active.
        self._refresh_logged()
        self._ready.set()
        while not self._stop.wait(self.poll_seconds):
            self._refresh_logged()

    def _load_model(self, model_dir: Path) -> tuple[Any, Any]:
        """The base model (in eval mode) and its tokenizer, on this engine's device."""
        import torch

        from learner.model.loading import load_base, pick_device

        torch.set_num_threads(self.num_threads)
        model, tokenizer = load_base(model_dir, pick_device(self.device_spec))
        model.eval()
        return model, tokenizer

    def _refresh_logged(self) -> None:
        try:
            self.refresh_active()
        except Exception as exc:  # the database may be briefly unreachable
            self._warn_once(None, f"refreshing the active adapter failed; retrying: {exc}")

    def _warn_once(self, version: int | None, message: str) -> None:
        """Log a problem the first time it is seen: the watcher retries at every poll."""
        if (version, message) not in self._warned:
            self._warned.add((version, message))
            log.warning("%s", message)

    def refresh_active(self) -> None:
        """Load the registry's active version if it changed, then switch to it.

        A version that cannot be loaded leaves the served one in place; ``unavailable``
        says why until the registry moves on.
        """
        with self.engine.connect() as conn:
            active = registry.active_version(conn)
            if active == self.active and self._synced:
                self._unavailable = None
                return
            row = registry.get_version(conn, active) if active is not None else None
        if active is not None:
            try:
                if row is None:  # the log's foreign key makes this unreachable in practice
                    raise registry.VersionUnavailable(f"adapter version {active} does not exist")
                self._ensure_loaded(active, registry.verify_version(self.data_dir, row))
            except registry.VersionUnavailable as exc:
                still = f"; still serving {self._served_name()}" if self._synced else ""
                self._unavailable = f"the active {exc}{still}"
                self._warn_once(active, self._unavailable)
                return
        self.active, self._synced, self._unavailable = active, True, None
        log.info("now serving %s", self._served_name())

    def _served_name(self) -> str:
        return "base" if self.active is None else f"lifelong@{self.active}"

    # --- adapters ----------------------------------------------------------------------

    def _verified_path(self, version: int, admin: bool) -> Path:
        """The files of ``version`` after checking that the caller may have them served."""
        with self.engine.connect() as conn:
            row = registry.get_version(conn, version)
        if row is None:
            raise UnknownModel(f"adapter version {version} does not exist")
        if row.status == "rejected":
            if not admin:
                raise UnknownModel(
                    f"adapter version {version} was rejected by the gate; "
                    "only admin keys may query it"
                )
            return registry.verify_weights(self.data_dir, row)
        return registry.verify_version(self.data_dir, row)

    def _ensure_loaded(self, version: int, path: Path | None = None) -> str:
        """Load a verified version into the LRU (``path`` None: verify it first)."""
        with self._lock:
            name = f"v{version}"
            if version in self._loaded:
                self._loaded.move_to_end(version)
                return name
            if path is None:
                path = self._verified_path(version, admin=True)
            assert self._model is not None
            try:
                self._load_adapter(name, path)
            except Exception as exc:  # verified files that peft cannot use: not servable
                if version not in self._load_failures:  # the watcher retries at every poll
                    self._load_failures.add(version)
                    log.exception("loading adapter %s failed", name)
                raise registry.VersionUnavailable(
                    f"adapter version {version} could not be loaded: {type(exc).__name__}"
                ) from exc
            self._loaded[version] = name
            self._evict()
            return name

    def _load_adapter(self, name: str, path: Path) -> None:
        if self._peft is None:
            from peft import PeftModel

            self._peft = PeftModel.from_pretrained(self._model, str(path), adapter_name=name)
            self._peft.eval()
            return
        try:
            self._peft.load_adapter(str(path), adapter_name=name)
        except Exception:
            if name in self._peft.peft_config:  # half registered: drop it before retrying
                self._peft.delete_adapter(name)
            raise

    def _evict(self) -> None:
        while len(self._loaded) > MAX_LOADED_ADAPTERS:
            victim = next(v for v in self._loaded if v != self.active)
            self._unload_adapter(self._loaded.pop(victim))

    def _unload_adapter(self, name: str) -> None:
        assert self._peft is not None
        self._peft.delete_adapter(name)

    # --- completions -------------------------------------------------------------------

    def _lifelong_version(self) -> int | None:
        """The version ``lifelong`` stands for now (None: the base model)."""
        if not self._synced and self._unavailable is not None:
            raise registry.VersionUnavailable(self._unavailable)
        return self.active

    def complete(
        self,
        model_name: str,
        prompts: list[str],
        params: GenerationParams,
        admin: bool = False,
        *,
        top_logprobs: int | None = None,
        on_start: Callable[[str], None] | None = None,
        on_delta: OnDelta | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Generated], str]:
        """Complete ``prompts`` with the named model; returns results and the resolved name.

        ``admin``: whether the caller holds an admin key (only admins may query a version
        the gate rejected). ``top_logprobs``, ``on_delta`` and ``cancel`` are passed on to
        :class:`learner.model.generate.Delivery`; ``on_start`` is called with the served
        name once the model is chosen, before decoding starts. Raises
        :class:`UnknownModel`, ``VersionUnavailable`` or :class:`ModelNotReady`.
        """
        kind, version = parse_model_name(model_name)
        path = self.check_model(model_name, admin)
        self.start_once()
        if not self._ready.is_set():
            reason = self._error or "the base model is still loading (first start trains it)"
            raise ModelNotReady(reason)
        if kind == "lifelong":
            version = self._lifelong_version()

        with self._lock:
            assert self._model is not None and self.tokenizer is not None
            served = "base"
            if version is not None:
                self._ensure_loaded(version, path)
                served = f"lifelong@{version}"
            if on_start is not None:
                on_start(served)
            delivery = self._delivery(top_logprobs, on_delta, cancel)
            with self._decoder(version) as decoder:
                results = decoder.decode(prompts, params, delivery)
            return results, served

    @staticmethod
    def _delivery(
        top_logprobs: int | None, on_delta: OnDelta | None, cancel: threading.Event | None
    ) -> Delivery:
        from learner.model.generate import Delivery  # torch comes with it: not at app import

        return Delivery(top_logprobs, on_delta, cancel)

    @contextmanager
    def _decoder(self, version: int | None) -> Iterator[Decoder]:
        """The decoder of ``version`` (loaded; None: the base model), used under ``_lock``."""
        from learner.model.generate import TransformersDecoder

        if version is not None:
            assert self._peft is not None
            self._peft.set_adapter(self._loaded[version])
            yield TransformersDecoder(self._peft, self.tokenizer)
        elif self._peft is None:
            yield TransformersDecoder(self._model, self.tokenizer)
        else:
            with self._peft.disable_adapter():
                yield TransformersDecoder(self._peft, self.tokenizer)

    def check_model(self, model_name: str, admin: bool = False) -> Path | None:
        """The verified files of a named version (None for ``lifelong`` and ``base``).

        Checked before anything else: a client asking for a missing or corrupt version
        learns so at once, even while the base model is still loading."""
        _, version = parse_model_name(model_name)
        return self._verified_path(version, admin) if version is not None else None

    @property
    def context_tokens(self) -> int | None:
        """The base model's context length in tokens (None: it does not say)."""
        config = getattr(self._model, "config", None)
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if value else None

    def ready_tokenizer(self, wait: float = 10.0) -> Any:
        """The base model's tokenizer, waiting up to ``wait`` seconds for the model to load
        (a client that submits right after the start should not have to retry);
        :class:`ModelNotReady` after that."""
        self.start_once()
        if not self._ready.wait(wait) or self.tokenizer is None:
            raise ModelNotReady(self._error or "the base model is still loading")
        return self.tokenizer

    def check_size(
        self, prompts: list[str], max_tokens: int, budget: int, choices: int = 1
    ) -> list[int]:
        """Prompt token counts, after checking the request fits the context and ``budget``.

        ``choices``: completions per prompt (``n``); each is a row of the padded batch.
        Raises :class:`ModelNotReady` before the tokenizer exists and
        :class:`RequestTooLarge` naming the numbers that do not fit.
        """
        if not self._ready.is_set():
            self.start_once()
            raise ModelNotReady(self._error or "the base model is still loading")
        from learner.model.loading import prompt_ids

        counts = [len(prompt_ids(self.tokenizer, p)) for p in prompts]
        longest = max(counts)
        context = self.context_tokens
        if context is not None and longest + max_tokens > context:
            raise RequestTooLarge(
                f"prompt of {longest} tokens + max_tokens {max_tokens} = "
                f"{longest + max_tokens} exceeds the model's context of {context} tokens"
            )
        # Prompts are padded to the longest and decoded together: that is the batch's cost.
        cost = len(prompts) * choices * (longest + max_tokens)
        if cost > budget:
            rows = f"{len(prompts)} prompt(s)" + (f" x n {choices}" if choices > 1 else "")
            raise RequestTooLarge(
                f"{rows} x ({longest} tokens of the longest prompt + "
                f"max_tokens {max_tokens}) = {cost} tokens exceeds the per-request budget "
                f"of {budget} tokens"
            )
        return counts
