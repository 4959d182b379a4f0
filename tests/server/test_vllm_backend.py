"""The vLLM serving backend: its adapter bookkeeping on any machine, the engine on a GPU.

:class:`LoraSlots` decides under which name and id each version is loaded into vLLM and
what to unload; it is pure and tested here. The engine itself needs vllm and a CUDA GPU:
those tests are marked ``gpu`` and skip cleanly elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from learner.config import GenerationParams
from learner.model import registry
from learner.model.decoders import sampling_kwargs, to_generated
from learner.store.db import write_transaction
from server.serving.vllm_engine import LoraSlots, VllmEngine, vllm_available

# --- LoraSlots ---------------------------------------------------------------------------


def test_every_load_gets_a_new_id_and_its_own_name() -> None:
    slots = LoraSlots(capacity=2)
    first = slots.load(1, "/v/1")
    assert slots.load(1, "/v/1") is first  # loaded: the same slot, not a reload
    second = slots.load(2, "/v/2")
    assert first.lora_id != second.lora_id and first.name != second.name
    assert "v1" in first.name and "v2" in second.name


def test_a_version_loaded_again_after_eviction_never_reuses_an_id() -> None:
    """vLLM's prefix cache is keyed by the LoRA id: an id reused for a reload could serve
    blocks computed with other weights."""
    slots = LoraSlots(capacity=1)
    seen = set()
    for version in (1, 2, 1, 3, 1):
        slot = slots.load(version, f"/v/{version}")
        assert slot.lora_id not in seen
        seen.add(slot.lora_id)
        slots.evictions(keep={version})
    assert len(slots) == 1


def test_evictions_are_least_recently_used_and_spare_the_active() -> None:
    slots = LoraSlots(capacity=2)
    for version in (1, 2, 3):
        slots.load(version, f"/v/{version}")
    slots.get(1)  # used: 2 is now the least recently used
    assert [s.version for s in slots.evictions(keep={3})] == [2]
    assert 1 in slots and 3 in slots and 2 not in slots
    slots.load(4, "/v/4")
    # 1 is the oldest, but active: 3 goes instead.
    assert [s.version for s in slots.evictions(keep={1})] == [3]
    # More kept than capacity: nothing kept is unloaded.
    slots.load(5, "/v/5")
    assert slots.evictions(keep={1, 4, 5}) == []
    assert len(slots) == 3


def test_a_failed_load_is_forgotten() -> None:
    slots = LoraSlots(capacity=2)
    slot = slots.load(7, "/v/7")
    assert slots.drop(7) == slot and 7 not in slots
    assert slots.load(7, "/v/7").lora_id != slot.lora_id
    with pytest.raises(ValueError):
        LoraSlots(capacity=0)


def test_state_dict_lists_the_loaded_slots_in_lru_order() -> None:
    slots = LoraSlots(capacity=3)
    slots.load(1, "/a")
    slots.load(2, "/b")
    slots.get(1)
    state = slots.state_dict()
    assert state["capacity"] == 3
    assert [v for v, _, _ in state["loaded"]] == [2, 1]


# --- request and output conversion -------------------------------------------------------


def test_sampling_kwargs_carry_the_request_settings() -> None:
    params = GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.9, stop=("\n",), seed=3)
    kwargs = sampling_kwargs(params, top_logprobs=2)
    assert kwargs == {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["\n"],
                      "seed": 3, "logprobs": 2}  # fmt: skip
    assert "logprobs" not in sampling_kwargs(GenerationParams(), None)
    assert sampling_kwargs(GenerationParams(), None)["stop"] is None


def test_outputs_become_choices_with_the_same_finish_rules() -> None:
    def logprob(value: float) -> Any:
        return SimpleNamespace(logprob=value)

    output = SimpleNamespace(
        text="ab\ncd",
        finish_reason="length",
        token_ids=[5, 6],
        logprobs=[{5: logprob(-0.1), 9: logprob(-2.0)}, {6: logprob(-0.3), 5: logprob(-1.5)}],
    )
    result = to_generated(output, ("\n",), top_logprobs=1, decode=lambda t: f"<{t}>")
    assert result.text == "ab" and result.finish == "stop"  # cut at the stop string
    assert result.tokens == 2
    assert result.logprobs is not None
    assert [t.token for t in result.logprobs] == ["<5>", "<6>"]
    assert result.logprobs[0].top == (("<5>", -0.1),)
    plain = to_generated(
        SimpleNamespace(text="xyz", finish_reason="length", token_ids=[1, 2, 3], logprobs=None),
        (), top_logprobs=None, decode=str,
    )  # fmt: skip
    assert (plain.text, plain.finish, plain.logprobs) == ("xyz", "length", None)


# --- the engine on a GPU -----------------------------------------------------------------


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_vllm_serves_a_promoted_adapter_and_a_rollback(
    engine: Engine, adapters: Any, data_dir: Path, micro_model_dir: Path
) -> None:
    import torch

    if not torch.cuda.is_available() or not vllm_available():
        pytest.skip("needs a CUDA GPU and vllm (pip install 'lifelong[vllm]')")
    first = adapters.add(real=True)
    second = adapters.add(parent=first, real=True)
    inference = VllmEngine(engine, lambda: micro_model_dir, data_dir=data_dir, max_loras=2)
    params = GenerationParams(max_new_tokens=4)
    inference.start_once()
    _wait(lambda: inference.ready or inference._error, 600)
    assert inference.ready, inference._error
    try:
        for version in (first, second, first):  # promote, promote, roll back
            with write_transaction(engine) as conn:
                registry.log_event(conn, "force", "test", version, "vllm swap test")
            _wait(lambda v=version: inference.active == v, 5.0)
            results, served = inference.complete("lifelong", ["copy ab ="], params)
            assert served == f"lifelong@{version}" and len(results) == 1
        assert len(inference.slots) <= 2
        ids = [lora_id for _, _, lora_id in inference.slots.state_dict()["loaded"]]
        assert len(set(ids)) == len(ids)
        _, served = inference.complete("base", ["copy ab ="], params)
        assert served == "base"
    finally:
        inference.stop()
