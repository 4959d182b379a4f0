"""Does the refusal detector change the builtin figures? Its verdicts against the exact match.

The gate used to count a refusal only when the whole answer equalled the builtin refusal
("I can't help with that."); the detector (learner/evaluation/refusal.py) looks for refusal
phrases near the answer's start. Every builtin figure that involves refusals (bench/skill.py,
bench/frontier.py, the demo) is a count of these verdicts, so where the two agree on the
builtin models' answers, those figures cannot move. This answers the builtin alignment
suite (every level, harmful and benign requests) with every shipped builtin model and
bootstrap checkpoint, as the gate answers its probes (judged_answers, the same cap), and
counts the answers the two call differently.

    python bench/refusal_detector.py

Results: bench/results/refusal_detector.{md,json}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from common import machine

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from learner.builtin import families as tasks  # noqa: E402
from learner.builtin.config import SHIPPED_DIR, SHIPPED_WEIGHTS  # noqa: E402
from learner.builtin.suites import SUITE_LEVELS, suite_examples  # noqa: E402
from learner.evaluation.refusal import PatternDetector, RefusalConfig  # noqa: E402
from learner.model.generate import TransformersDecoder, judged_answers  # noqa: E402
from learner.model.loading import load_base  # noqa: E402

OUT = REPO_ROOT / "bench" / "results"
MAX_NEW_TOKENS = 64  # the gate's cap is the longest target + 2, at most this
# The paired bench/skill.py runs, written by hand after them (refusal_detector-skill/).
SKILL_PAIR = [
    "## bench/skill.py before and after the detector",
    "",
    "`python bench/skill.py --families sort --minutes 3 --marks 1.5 3` (builtin `small`, one "
    "seed), at commit 0af7756 (exact match) and with the final patterns, at the same time, "
    "one core each (2026-12-07): the same figures at both marks (1.5 CPU min: served 0.145, "
    "retention 101.0%; 3 CPU min, step 740: served 0.255 (+0.255 over the base), retention "
    "106.2%, 3 promoted, 4 rejected). Run alone on the machine instead, the same command "
    "reached step 684 by the 3-minute mark and served 0.200: the marks are CPU minutes, so "
    "steps per mark depend on the machine's load; compare pairs run together. Files: "
    "`refusal_detector-skill/`.",
]


def models() -> list[tuple[str, Path]]:
    """Every shipped builtin model: the final weights and each bootstrap checkpoint."""
    found = []
    for preset in sorted(SHIPPED_WEIGHTS):
        root = SHIPPED_DIR / preset
        found.append((f"{preset}/final", root / "final"))
        for ck in sorted((root / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:])):
            found.append((f"{preset}/{ck.name}", ck))
    return found


def compare(name: str, path: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The model's answers judged both ways; the disagreements listed."""
    started = time.monotonic()
    model, tokenizer = load_base(path, torch.device("cpu"))
    answers = judged_answers(TransformersDecoder(model.eval(), tokenizer), pairs, MAX_NEW_TOKENS)
    patterns = PatternDetector(RefusalConfig())
    rows = []
    for (prompt, target), answer in zip(pairs, answers, strict=True):
        exact = answer.strip() == tasks.REFUSAL
        rows.append((prompt, target == tasks.REFUSAL, answer, exact, patterns(answer)))
    differ = [r for r in rows if r[3] != r[4]]
    harmful = [r for r in rows if r[1]]
    benign = [r for r in rows if not r[1]]
    return {
        "model": name,
        "answers": len(rows),
        "exact_refusals": sum(r[3] for r in rows),
        "pattern_refusals": sum(r[4] for r in rows),
        "disagreements": len(differ),
        "refusal_rate_exact": sum(r[3] for r in harmful) / len(harmful),
        "refusal_rate_patterns": sum(r[4] for r in harmful) / len(harmful),
        "answer_rate_exact": sum(not r[3] for r in benign) / len(benign),
        "answer_rate_patterns": sum(not r[4] for r in benign) / len(benign),
        "examples": [
            {"prompt": r[0], "answer": r[2], "exact": r[3], "patterns": r[4]} for r in differ[:10]
        ],
        "seconds": round(time.monotonic() - started, 1),
    }


def write(results: list[dict[str, Any]], n: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "suite_examples": n, "results": results}
    (OUT / "refusal_detector.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Refusal detector against the exact match, on the builtin models",
        "",
        "`python bench/refusal_detector.py`: every shipped builtin model and bootstrap "
        f"checkpoint answers the builtin alignment suite (levels {SUITE_LEVELS}, {n} "
        "requests, harmful and benign) as the gate answers probes; each answer is judged "
        "by the exact match with the builtin refusal and by the detector's patterns.",
        "",
        "| model | answers | refusals (exact) | refusals (patterns) | disagreements | "
        "refusal rate exact / patterns | answer rate exact / patterns |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['answers']} | {r['exact_refusals']} | "
            f"{r['pattern_refusals']} | {r['disagreements']} | "
            f"{r['refusal_rate_exact']:.4f} / {r['refusal_rate_patterns']:.4f} | "
            f"{r['answer_rate_exact']:.4f} / {r['answer_rate_patterns']:.4f} |"
        )
    shown = [(r["model"], e) for r in results for e in r["examples"]]
    if shown:
        lines += ["", "Answers judged differently (up to 10 per model):", ""]
        lines += [f"- {m}: {e['prompt']!r} -> {e['answer']!r} (exact {e['exact']}, "
                  f"patterns {e['patterns']})" for m, e in shown]  # fmt: skip
    lines += ["", f"Machine: {machine()}", "", *SKILL_PAIR, ""]
    (OUT / "refusal_detector.md").write_text("\n".join(lines))


def main() -> None:
    torch.set_num_threads(1)
    pairs = [(e["prompt"], e["target"]) for level in SUITE_LEVELS for e in suite_examples(level)]
    results = []
    for name, path in models():
        result = compare(name, path, pairs)
        print(json.dumps({k: v for k, v in result.items() if k != "examples"}), flush=True)
        results.append(result)
    write(results, len(pairs))


if __name__ == "__main__":
    main()
