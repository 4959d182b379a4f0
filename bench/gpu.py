"""LoRA training on a GPU: tokens/s and model FLOPs utilisation, full learner loop and bare peft.

No weights can be downloaded, so the model is a Llama-shaped causal LM initialised from a
config (random weights: the speed of a step does not depend on what the weights know) and
saved locally with the builtin tokenizer; preset ``0.5b`` has about 0.47 B parameters
(24 layers, hidden 1024, MLP 4096, vocabulary 32,000). Both loops of
``bench/learner_loop.py`` run on it, on the same batches and device: the learner's own
loop (replay, teacher, candidates, checkpoints, scorer), then the bare peft loop on the
batches it drew.

Model FLOPs per trained token, for LoRA (frozen base): forward ``2 N``, backward through
the activations ``2 N`` (no weight gradients for the frozen ``N``), plus ``6 N_lora`` for
the adapter; attention's sequence-length term is left out (sequences here are under 100
tokens, so it is a few percent). MFU = that x tokens/s / the device's peak dense bf16 FLOP/s
(``--peak-tflops``; H100/H200 SXM: 989).

    python bench/gpu.py                          # preset 0.5b on cuda
    python bench/gpu.py --preset tiny --device cpu --steps 5   # the code path, on a CPU

Results: bench/results/gpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import machine
from learner_loop import BenchConfig, bare_loop, full_loop, learner_config, load_examples

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import get_peft_model  # noqa: E402

from learner.builtin.model import BuiltinConfig, ensure_builtin_model  # noqa: E402
from learner.training.step import lora_config  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
PRESETS: dict[str, dict[str, int]] = {
    "0.5b": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 512},
}  # fmt: skip
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def llama_model_dir(preset: str, cache: Path) -> Path:
    """A Llama-shaped model from ``PRESETS[preset]`` with the builtin tokenizer, saved once."""
    out = cache / f"llama-{preset}"
    if (out / "config.json").exists():
        return out
    tokenizer_dir = ensure_builtin_model(cache, BuiltinConfig.preset("micro"), progress=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = PRESETS[preset]
    config = transformers.LlamaConfig(
        **shape,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"preset {preset}: vocabulary smaller than the tokenizer's")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # whole or absent: a half-written directory is never used
    return out


def parameter_counts(model_dir: Path, cfg: BenchConfig) -> tuple[int, int]:
    """(frozen base parameters, LoRA parameters) of the model with the learner's adapter."""
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, lora_config(learner_config(cfg), base))
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return total - lora, lora


def peak_flops(device: str, override: float | None) -> float | None:
    if override is not None:
        return override * 1e12
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in name), None)


def mfu(run: dict[str, Any], frozen: int, lora: int, peak: float | None) -> float | None:
    flops_per_token = 4 * frozen + 6 * lora
    return None if peak is None else run["tokens_per_s"] * flops_per_token / peak


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# LoRA training on a GPU: tokens/s and MFU",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- model: {report['preset']} ({report['frozen_params']:,} frozen + "
        f"{report['lora_params']:,} LoRA parameters)",
        f"- config: {report['config']}",
        "",
        "| loop | tokens | wall s | tokens/s | MFU |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in report["runs"].items():
        share = "n/a" if run["mfu"] is None else f"{run['mfu']:.1%}"
        lines.append(f"| {name} | {run['tokens']:,} | {run['wall_s']:.1f} | "
                     f"{run['tokens_per_s']:,.0f} | {share} |")  # fmt: skip
    lines += ["", f"**full / bare = {report['ratio']:.2f}**"]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="0.5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    model_dir = llama_model_dir(args.preset, args.cache)
    cfg = replace(BenchConfig(), model=str(model_dir), device=args.device, steps=args.steps,
                  batch_size=args.batch_size, threads=0 if args.device != "cpu" else 1)  # fmt: skip
    frozen, lora = parameter_counts(model_dir, cfg)
    peak = peak_flops(args.device, args.peak_tflops)
    buckets = load_examples(cfg.examples)
    with tempfile.TemporaryDirectory() as tmp:
        full = full_loop(cfg, model_dir, Path(tmp), buckets)
    # The bare loop trains on the very batches the full loop drew.
    runs = {"bare peft": bare_loop(cfg, model_dir, full.pop("batches")), "full learner loop": full}
    for run in runs.values():
        run["mfu"] = mfu(run, frozen, lora, peak)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None),
        "command": " ".join(["python bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "preset": args.preset,
        "frozen_params": frozen,
        "lora_params": lora,
        "peak_flops": peak,
        "config": asdict(cfg),
        "runs": runs,
        "ratio": runs["full learner loop"]["tokens_per_s"] / runs["bare peft"]["tokens_per_s"],
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
