"""The decoders that are not a local transformers model: a vLLM engine and an
OpenAI-compatible HTTP endpoint, both behind :class:`learner.model.generate.Decoder`.

Serving (``server.serving.vllm_engine``) and the difficulty ensemble's ``vllm:`` and
``openai:`` members answer through these, so that decoding settings, stop strings and
finish reasons follow the rules of :func:`learner.model.generate.generate_choices`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from learner.config import GenerationParams
from learner.model.generate import JUDGED, Delivery, Generated, TokenLogprob, cut_at_stop

# --- vLLM ----------------------------------------------------------------------------------


def sampling_kwargs(params: GenerationParams, top_logprobs: int | None) -> dict[str, Any]:
    """vLLM ``SamplingParams`` arguments for one request's decoding settings."""
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "seed": params.seed,
    }
    if top_logprobs is not None:
        kwargs["logprobs"] = max(top_logprobs, 1)
    return kwargs


def to_generated(
    output: Any, stops: Sequence[str], top_logprobs: int | None, decode: Callable[[int], str]
) -> Generated:
    """One vLLM ``CompletionOutput`` as a :class:`Generated` (same fields, same rules)."""
    text, stopped = cut_at_stop(str(output.text), stops)
    finish = "stop" if stopped or output.finish_reason == "stop" else "length"
    token_ids = list(output.token_ids)
    logprobs = None
    if top_logprobs is not None and output.logprobs is not None:
        items = []
        for token_id, ranked in zip(token_ids, output.logprobs, strict=False):
            top = sorted(ranked.items(), key=lambda kv: -kv[1].logprob)[:top_logprobs]
            chosen = ranked[token_id].logprob if token_id in ranked else float("-inf")
            named = tuple((decode(t), v.logprob) for t, v in top)
            items.append(TokenLogprob(decode(token_id), chosen, named))
        logprobs = tuple(items)
    return Generated(text, finish, len(token_ids), logprobs)


class VllmDecoder:
    """A vLLM ``LLM`` (with a LoRA request, or the base model when None).

    vLLM's offline engine returns finished outputs: a streamed answer arrives as one delta,
    and ``cancel`` takes effect before decoding starts, not between tokens.
    """

    def __init__(self, llm: Any, lora_request: Any = None, tokenizer: Any = None) -> None:
        self.llm, self.lora_request = llm, lora_request
        # The serving engine made one per request: it passes the tokenizer it holds.
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(
        self, prompts: Sequence[str], params: GenerationParams, delivery: Delivery = JUDGED
    ) -> list[Generated]:
        from vllm import SamplingParams

        top_logprobs, on_delta, cancel = delivery.top_logprobs, delivery.on_delta, delivery.cancel
        if cancel is not None and cancel.is_set():
            return [Generated("", "stop", 0) for _ in prompts]
        sampling = SamplingParams(**sampling_kwargs(params, top_logprobs))
        outputs = self.llm.generate(
            list(prompts), sampling, lora_request=self.lora_request, use_tqdm=False
        )

        def name(token_id: int) -> str:
            return str(self.tokenizer.decode([token_id]))

        results = [to_generated(o.outputs[0], params.stop, top_logprobs, name) for o in outputs]
        if on_delta is not None:
            for row, result in enumerate(results):
                on_delta(row, result.text)
        return results

    def target_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean log probability of each target's tokens after its prompt (vLLM
        ``prompt_logprobs``; the first token of a sequence has none and is never a target)."""
        from vllm import SamplingParams

        sampling = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        starts = [len(self.tokenizer(prompt)["input_ids"]) for prompt, _ in pairs]
        outputs = self.llm.generate([p + t for p, t in pairs], sampling, use_tqdm=False)
        means = []
        for output, start in zip(outputs, starts, strict=True):
            ids, scored = output.prompt_token_ids, output.prompt_logprobs  # scored[i]: dict|None
            values = [scored[i][ids[i]].logprob for i in range(max(start, 1), len(ids))]
            means.append(float(sum(values) / len(values)) if values else 0.0)
        return means


# --- an OpenAI-compatible endpoint ---------------------------------------------------------


OPENAI_PREFIX = "openai:"  # a model behind an OpenAI-compatible endpoint: openai:<model>@<url>


def parse_endpoint(spec: str) -> tuple[str, str]:
    """``openai:<model>@<base url>`` -> (model, base url)."""
    model, sep, url = spec.removeprefix(OPENAI_PREFIX).partition("@")
    if not (model and sep and url.startswith(("http://", "https://"))):
        raise ValueError(f"{spec!r}: expected openai:<model>@<http(s) base url>")
    return model, url


def retry_after_seconds(header: str | None) -> float:
    """Seconds to wait: the header's delay in seconds (an HTTP date counts as 1 s), at most 5."""
    try:
        return min(max(float(header or 1), 0.1), 5.0)
    except ValueError:
        return 1.0


class HttpDecoder:
    """An OpenAI-compatible ``/completions`` endpoint (any server, this service included).

    Its tokenizer is not at hand, so :meth:`count_tokens` counts characters: they bound the
    tokens of common tokenizers, which makes an answer cap in characters a safe one.
    """

    def __init__(self, model: str, base_url: str, api_key: str, timeout: float) -> None:
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key, self.timeout = api_key, timeout

    def count_tokens(self, text: str) -> int:
        return len(text)

    def decode(
        self, prompts: Sequence[str], params: GenerationParams, delivery: Delivery = JUDGED
    ) -> list[Generated]:
        if delivery != JUDGED:
            raise ValueError("an HTTP decoder answers whole completions without logprobs")
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(prompts),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        results = [Generated("", "length", 0)] * len(prompts)
        for position, choice in enumerate(self._post(body)["choices"]):
            text, _ = cut_at_stop(str(choice.get("text", "")), params.stop)
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
            results[int(choice.get("index", position))] = Generated(text, finish, 0)
        return results

    def _post(self, body: dict[str, Any]) -> Any:
        """POST, retrying while the endpoint answers 429 or 503 (busy, or loading its model)
        for up to ``timeout`` seconds, as its Retry-After header asks."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/completions", json.dumps(body).encode(), headers, method="POST"
        )
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503) or time.monotonic() >= deadline:
                    raise
                time.sleep(retry_after_seconds(exc.headers.get("Retry-After")))
