"""A difficulty-ensemble member scored through vLLM (``vllm:<model dir>``; GPU, optional).

The same answers as :class:`learner.ensemble.LocalMember` — a greedy completion judged by
the bucket's grader, and the mean log probability of the target's tokens after the prompt
— from vLLM's engine: greedy decoding for the first, ``prompt_logprobs`` over
``prompt + target`` for the second (each target token is scored as part of a prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learner.generation import answer_cap
from learner.graders import get_grader
from learner.store.difficulty import MemberAnswer, PendingExample, group_by_grader

VLLM_PREFIX = "vllm:"


def target_logprobs(llm: Any, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Mean log probability of each target's tokens after its prompt (vLLM
    ``prompt_logprobs``; the first token of a sequence has none and is never a target)."""
    from vllm import SamplingParams

    tokenizer = llm.get_tokenizer()
    sampling = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    starts = [len(tokenizer(prompt)["input_ids"]) for prompt, _ in pairs]
    outputs = llm.generate([p + t for p, t in pairs], sampling, use_tqdm=False)
    means = []
    for output, start in zip(outputs, starts, strict=True):
        ids, scored = output.prompt_token_ids, output.prompt_logprobs  # scored[i]: dict or None
        positions = range(max(start, 1), len(ids))
        values = [scored[i][ids[i]].logprob for i in positions]
        means.append(float(sum(values) / len(values)) if values else 0.0)
    return means


class VllmMember:
    """An ensemble member on a vLLM engine (loaded at first use, ``gpu_memory_utilization``
    of the GPU); its answers are those of :class:`~learner.ensemble.LocalMember`."""

    def __init__(
        self, name: str, path: Path, max_new_tokens: int, gpu_memory_utilization: float = 0.3
    ) -> None:
        self.name, self.path, self.max_new_tokens = name, path, max_new_tokens
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm: Any = None

    def _engine(self) -> Any:
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(
                model=str(self.path), gpu_memory_utilization=self.gpu_memory_utilization
            )
        return self._llm

    def answer(self, items: Sequence[PendingExample]) -> list[MemberAnswer]:
        from vllm import SamplingParams

        llm = self._engine()
        tokenizer = llm.get_tokenizer()

        def tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        out = []
        for grader, group in group_by_grader(items).items():
            grade = get_grader(grader)
            cap = answer_cap([i.target for i in group], tokens, self.max_new_tokens)
            greedy = SamplingParams(max_tokens=cap, temperature=0.0)  # the local members' cap
            texts = [o.outputs[0].text for o in
                     llm.generate([i.prompt for i in group], greedy, use_tqdm=False)]  # fmt: skip
            logprobs = target_logprobs(llm, [(i.prompt, i.target) for i in group])
            out += [
                MemberAnswer(i.id, self.name, bool(grade(text, i.target)), lp)
                for i, text, lp in zip(group, texts, logprobs, strict=True)
            ]
        return out
