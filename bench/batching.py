"""Would merging concurrent completion requests into one generate call pay off?

The serving path generates one request at a time (each request's prompts already decode
together, left-padded). This measures, on the builtin ``tiny`` architecture (freshly
initialised: generation costs the same whatever the weights; every answer runs to
``max_tokens`` because an untrained model rarely emits EOS), the time for ``--requests``
requests of ``--prompts`` prompts each:

- sequential: one ``generate`` call per request (what the server does), and
- merged: one ``generate`` call with all the requests' prompts.

    python bench/batching.py                  # 8 requests x 4 prompts, 24 tokens, 1 thread
    python bench/batching.py --threads 2

Results go to bench/results/batching.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import torch
from common import machine
from ingest import RESULTS_DIR

from learner.builtin.config import BuiltinConfig
from learner.builtin.model import build_model, build_tokenizer
from learner.config import GenerationParams
from learner.model.generate import generate_choices

# Prompts of the synthetic families' shape and mixed lengths, as clients send them.
PROMPTS = ["copy abcdefgh =", "add 123 456 =", "reverse hello world =", "sort 9 3 7 1 ="]


def _time(fn: Any, repeats: int) -> list[float]:
    fn()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(requests: int, prompts: int, max_tokens: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = build_model(BuiltinConfig.preset("tiny"), tokenizer).eval()
    params = GenerationParams(max_new_tokens=max_tokens, temperature=0.0)
    batches = [[PROMPTS[(r + i) % len(PROMPTS)] for i in range(prompts)] for r in range(requests)]

    def sequential() -> None:
        for batch in batches:
            generate_choices(model, tokenizer, batch, params)

    def merged() -> None:
        generate_choices(model, tokenizer, [p for batch in batches for p in batch], params)

    seq = _time(sequential, repeats)
    mer = _time(merged, repeats)
    return {
        "sequential_s": round(statistics.median(seq), 4),
        "merged_s": round(statistics.median(mer), 4),
        "speedup": round(statistics.median(seq) / statistics.median(mer), 2),
        "sequential_all_s": [round(s, 4) for s in seq],
        "merged_all_s": [round(s, 4) for s in mer],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per request")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {
        "command": "python bench/batching.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "requests": args.requests,
        "prompts_per_request": args.prompts,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        **measure(args.requests, args.prompts, args.max_tokens, args.repeats),
    }
    text = (
        f"# Merging completion requests\n\n`{result['command']}`, {result['date']}, "
        f"{args.threads} thread(s): {args.requests} requests x {args.prompts} prompts, "
        f"{args.max_tokens} tokens each, builtin tiny architecture.\n\n"
        "| sequential (one generate per request) | merged (one generate) | speedup |\n"
        "| ---: | ---: | ---: |\n"
        f"| {result['sequential_s']:.3f} s | {result['merged_s']:.3f} s | "
        f"{result['speedup']:.2f}x |\n"
    )
    print(text)
    (RESULTS_DIR / "batching.json").write_text(json.dumps(result, indent=2))
    (RESULTS_DIR / "batching.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
