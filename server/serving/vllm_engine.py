"""Serving completions through vLLM (the optional extra ``lifelong[vllm]``, GPU only).

``LIFELONG_SERVING_BACKEND=vllm`` replaces the transformers backend of
:class:`server.serving.engine.InferenceEngine` with :class:`VllmEngine`: the same registry watch,
sha256 checks, admin rules and LRU of loaded versions, with vLLM's multi-LoRA engine
underneath. The transformers backend stays the default and the one CI tests.

Adapter versions and vLLM's names (:class:`LoraSlots`): every version is loaded under its
own name and a LoRA id that is never used again. vLLM caches KV blocks of a prefix per
LoRA id, so reloading other weights under an id already served (an "in-place" reload)
can answer from blocks computed with the old weights; a fresh id per load cannot. A
promotion loads the new version (under its new id) *before* the watcher switches to it,
a rollback switches back to a still-loaded id or loads the old version under a new one,
and versions beyond the LRU's capacity are unloaded (never the active one).

What differs from the transformers backend: a streamed completion arrives as one delta
(vLLM's offline ``LLM`` returns finished outputs), and ``cancel`` takes effect between
requests, not between tokens.

The difficulty ensemble scores through vLLM too: ``vllm:<model dir>`` members
(:class:`learner.curriculum.ensemble.VllmMember`), and both decode through
:class:`learner.model.decoders.VllmDecoder`.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from learner.model.decoders import VllmDecoder
from learner.model.generate import Decoder
from server.serving.engine import InferenceEngine


def vllm_available() -> bool:
    """True when vllm can be imported (it needs a CUDA build of torch)."""
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a CUDA-less torch failing inside vllm's import
        return False
    return True


# --- the bookkeeping (pure: tested without vLLM) ---------------------------------------


@dataclass(frozen=True)
class LoraSlot:
    """One load of one adapter version into vLLM: its name, its never-reused id, its files."""

    version: int
    name: str
    lora_id: int
    path: str


class LoraSlots:
    """Which adapter versions vLLM holds, in least-recently-used order.

    Pure bookkeeping (no vLLM): :meth:`load` hands out a new slot for a version that is not
    loaded, :meth:`evictions` says which slots to unload to stay within ``capacity``.
    """

    def __init__(self, capacity: int, first_id: int = 1) -> None:
        if capacity < 1:
            raise ValueError("LoraSlots: capacity must be >= 1")
        self.capacity = capacity
        self._ids = itertools.count(first_id)  # vLLM ids are positive ints
        self._slots: OrderedDict[int, LoraSlot] = OrderedDict()

    def __contains__(self, version: object) -> bool:
        return version in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, version: int) -> LoraSlot | None:
        """The loaded slot of ``version`` (marked as used now), or None."""
        slot = self._slots.get(version)
        if slot is not None:
            self._slots.move_to_end(version)
        return slot

    def load(self, version: int, path: Path | str) -> LoraSlot:
        """The slot to load ``version`` into: the loaded one, or a new name and id."""
        slot = self.get(version)
        if slot is None:
            lora_id = next(self._ids)
            # The id in the name too: vLLM keys some of its state by name.
            slot = LoraSlot(version, f"lifelong-v{version}-{lora_id}", lora_id, str(path))
            self._slots[version] = slot
        return slot

    def drop(self, version: int) -> LoraSlot | None:
        """Forget ``version`` (after a failed load, say); returns its slot if it had one."""
        return self._slots.pop(version, None)

    def evictions(self, keep: set[int]) -> list[LoraSlot]:
        """Remove and return the least recently used slots beyond ``capacity``, skipping
        the versions in ``keep`` (the active one). May leave more than ``capacity`` when
        ``keep`` holds more."""
        victims = []
        for version in list(self._slots):
            if len(self._slots) <= self.capacity:
                break
            if version not in keep:
                victims.append(self._slots.pop(version))
        return victims

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "loaded": [(s.version, s.name, s.lora_id) for s in self._slots.values()],
        }


# --- the engine ------------------------------------------------------------------------


class VllmEngine(InferenceEngine):
    """:class:`InferenceEngine` with vLLM's multi-LoRA engine doing the decoding."""

    def __init__(
        self,
        engine: Engine,
        resolve_model_dir: Callable[[], Path],
        *,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        gpu_memory_utilization: float = 0.5,
        poll_seconds: float = 0.2,
        data_dir: Path = Path("."),
    ) -> None:
        super().__init__(
            engine, resolve_model_dir, device="cuda", poll_seconds=poll_seconds, data_dir=data_dir
        )
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.gpu_memory_utilization = gpu_memory_utilization
        self.slots = LoraSlots(capacity=max_loras)
        self._llm: Any = None

    def _load_model(self, model_dir: Path) -> tuple[Any, Any]:
        from vllm import LLM

        self._llm = LLM(
            model=str(model_dir),
            enable_lora=True,
            max_lora_rank=self.max_lora_rank,
            max_loras=self.max_loras,
            gpu_memory_utilization=self.gpu_memory_utilization,
            enable_prefix_caching=True,
        )
        return self._llm, self._llm.get_tokenizer()

    def _lora_request(self, slot: LoraSlot) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(slot.name, slot.lora_id, slot.path)

    def _load_adapter(self, name: str, path: Path) -> None:
        version = int(name.removeprefix("v"))
        slot = self.slots.load(version, path)
        try:
            # Loaded now, on the watcher's thread, so that the first request after a
            # promotion does not wait for the weights.
            self._llm.llm_engine.add_lora(self._lora_request(slot))
        except Exception:
            self.slots.drop(version)
            raise

    def _unload_adapter(self, name: str) -> None:
        slot = self.slots.drop(int(name.removeprefix("v")))
        if slot is not None:
            self._llm.llm_engine.remove_lora(slot.lora_id)

    @contextmanager
    def _decoder(self, version: int | None) -> Iterator[Decoder]:
        request = None
        if version is not None:
            slot = self.slots.get(version)
            assert slot is not None, f"version {version} is not loaded"
            request = self._lora_request(slot)
        yield VllmDecoder(self._llm, request, self.tokenizer)

    @property
    def context_tokens(self) -> int | None:
        if self._llm is None:
            return None
        return int(self._llm.llm_engine.model_config.max_model_len)
