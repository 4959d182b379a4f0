"""The vLLM ensemble member: built from a ``vllm:<dir>`` spec anywhere (vLLM loads at first
use), and on a GPU with vllm installed its answers agree with the transformers member's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.builtin.families import make_examples
from learner.config import DifficultyConfig
from learner.curriculum.ensemble import EnsembleContext, LocalMember, VllmMember, build_members
from learner.store.difficulty import PendingExample


def test_a_vllm_spec_builds_a_vllm_member_without_loading_it(micro_model_dir: Path) -> None:
    ctx = EnsembleContext("builtin:micro", micro_model_dir, torch.device("cpu"), max_length=64)
    config = DifficultyConfig(members=(f"vllm:{micro_model_dir}",))
    member = build_members(config, ctx)[-1]
    assert isinstance(member, VllmMember)
    assert member.path == micro_model_dir.resolve() and member.name == f"vllm:{micro_model_dir}"
    assert member._decoder is None  # nothing loaded (no vllm needed) until it answers


@pytest.mark.gpu
def test_vllm_member_agrees_with_the_transformers_member(micro_model_dir: Path) -> None:
    from server.serving.vllm_engine import vllm_available

    if not torch.cuda.is_available() or not vllm_available():
        pytest.skip("needs a CUDA GPU and vllm (pip install 'lifelong[vllm]')")
    items = [
        PendingExample(i, e["prompt"], e["target"], "exact", ("local", "vllm"))
        for i, e in enumerate(make_examples("copy", 16, 1, seed=5))
    ]
    local = LocalMember("local", micro_model_dir, torch.device("cuda"), 16, 64).answer(items)
    served = VllmMember("vllm", micro_model_dir, 16).answer(items)
    assert [a.correct for a in served] == [a.correct for a in local]
    for a, b in zip(served, local, strict=True):
        assert a.mean_logprob == pytest.approx(b.mean_logprob, abs=0.05)
