"""The embedded default base model ``builtin:<preset>``, trained from scratch on first use.

No model can be downloaded at run time, so the default base is a small Llama-architecture
model with a character-level tokenizer (every printable ASCII character plus ``\\n`` and
``\\t`` is one token). On first use it is trained on the foundation curriculum of
:mod:`learner.builtin.families` and saved as an ordinary Hugging Face directory, so everything
downstream (peft, ``AutoModelForCausalLM``, vLLM) treats it like any other model::

    <data_dir>/models/builtin-tiny/
        checkpoints/step-N/   intermediate checkpoints: the default difficulty ensemble
        final/                config.json, model.safetensors, tokenizer.json, provenance.json
        COMPLETE.json         completion marker, written last

Every directory is written atomically (temporary directory, fsync, rename) and the whole
bootstrap runs under a file lock, so a server and a learner starting together train once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, processors
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from learner.builtin import families as tasks
from learner.builtin.config import (  # noqa: F401  (re-exported: the public builtin API)
    BUILTIN_PREFIX,
    DEFAULT_PRESET,
    MIN_CONTEXT,
    PRESETS,
    SHIPPED_DIR,
    SHIPPED_WEIGHTS,
    BuiltinConfig,
    max_context_chars,
)
from learner.fsutil import sha256_file, write_dir_atomically, write_json_atomically
from learner.model.chat import BUILTIN_CHAT_TEMPLATE
from learner.model.generate import TransformersDecoder, judged_answers
from learner.model.loading import encode_examples

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3
CHARSET = "".join(chr(c) for c in range(32, 127)) + "\n\t"
# --- tokenizer and model ------------------------------------------------------------------


def build_tokenizer(model_max_length: int = MIN_CONTEXT) -> PreTrainedTokenizerFast:
    """Character-level tokenizer: a BPE model with no merges, so every character is a token."""
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARSET))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()  # join characters back without separators
    # BOS in front of every text, like Llama: training and serving tokenize the same way.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # " ." must stay " ."
    )


def build_model(
    config: BuiltinConfig, tokenizer: PreTrainedTokenizerFast
) -> transformers.LlamaForCausalLM:
    """A freshly initialised Llama model sized by ``config`` (seed torch first)."""
    llama = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,  # halves the (small) embedding cost; common for tiny LMs
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = transformers.LlamaForCausalLM(llama)
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    model.generation_config = transformers.GenerationConfig(**ids, do_sample=False)
    return model


def evaluate_families(
    model_dir: Path | str,
    families: Sequence[tuple[str, int]] | None = None,
    n: int = 50,
    seed: int = 10_000,
) -> dict[str, float]:
    """Greedy accuracy per ``family-lN`` on fresh examples (default: :func:`eval_set`)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return _evaluate(model, tokenizer, families or eval_set(), n, seed)


def eval_set(mix: Sequence[tuple[str, int, float]] = tasks.FOUNDATION_MIX) -> list[tuple[str, int]]:
    """Every (family, level) of the curriculum, plus level 1 of the families it leaves out."""
    trained = sorted({(family, level) for family, level, _ in mix})
    return trained + [(f, 1) for f in tasks.FAMILIES if f not in {f for f, _ in trained}]


def _evaluate(
    model: Any, tokenizer: Any, families: Sequence[tuple[str, int]], n: int, seed: int
) -> dict[str, float]:
    model.eval()
    scores: dict[str, float] = {}
    for name, level in families:
        fam = tasks.get_family(name)
        examples = tasks.make_examples(fam, n, level, seed)
        pairs = [(ex["prompt"], ex["target"]) for ex in examples]
        # Greedy, capped at the longest target + slack: the answers probes and the gate judge.
        preds = judged_answers(TransformersDecoder(model, tokenizer), pairs, max_new_tokens=256)
        hits = sum(fam.grade(p, ex["target"]) for p, ex in zip(preds, examples, strict=True))
        scores[tasks.bucket_name(name, level)] = hits / n
    return scores


# --- bootstrap training -------------------------------------------------------------------


def _save(dest: Path, model: Any, tokenizer: Any, provenance: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar inside ours
        try:
            model.save_pretrained(tmp)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(tmp)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))

    write_dir_atomically(dest, write)


def _lr_at(step: int, config: BuiltinConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak (step counts from 1)."""
    if step <= config.warmup_steps:
        return config.learning_rate * step / config.warmup_steps
    frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n or len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _length_grouped(
    stream: Iterator[dict[str, Any]], batch_size: int, seed: int, group: int = 4
) -> Iterator[list[dict[str, Any]]]:
    """Batches of similar length: draw ``group`` batches' worth, sort by length, split.

    Alignment prompts are ~3x longer than the others, so random batches are mostly padding;
    grouping roughly halves the padded width (76 -> 40 tokens for the foundation mix).
    """
    rng = random.Random(seed)
    while True:
        pool = sorted(
            (next(stream) for _ in range(batch_size * group)),
            key=lambda ex: len(ex["prompt"]) + len(ex["target"]),
        )
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)  # otherwise every 4 steps would run from short to long
        yield from chunks


def _pairs(examples: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(ex["prompt"], ex["target"]) for ex in examples]


def _train(config: BuiltinConfig, root: Path, progress: bool) -> None:
    """nanoGPT-style loop: sample a batch from the curriculum, one AdamW step, repeat."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer(config.max_position_embeddings)
    model = build_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    # No weight decay on norms (1-d weights); the tied embedding matrix is decayed.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.98))
    batches = _length_grouped(
        tasks.foundation_curriculum(config.seed, config.mix), config.batch_size, config.seed
    )
    n_ck = config.num_checkpoints
    ck_steps = {round(config.steps * k / (n_ck + 1)) for k in range(1, n_ck + 1)}
    losses: list[float] = []

    def provenance(step: int, **extra: Any) -> dict[str, Any]:
        window = losses[-20:]
        return {
            "model": f"{BUILTIN_PREFIX}{config.name}",
            "config": asdict(config),
            "fingerprint": config.fingerprint(),
            "seed": config.seed,
            "step": step,
            "steps": config.steps,
            "examples_seen": step * config.batch_size,
            "parameters": n_params,
            "loss": {
                "initial": sum(losses[:5]) / len(losses[:5]),
                "final": sum(window) / len(window),  # mean of the last 20 steps
                "every_10_steps": losses[::10],
            },
            "wall_seconds": round(time.monotonic() - started, 2),
            "versions": {m.__name__: m.__version__ for m in (torch, transformers, tokenizers)},
            **extra,
        }

    model.train()
    bar = tqdm(total=config.steps, desc=f"bootstrap {BUILTIN_PREFIX}{config.name}",
               unit="step", disable=not progress)  # fmt: skip
    for step in range(1, config.steps + 1):
        batch = next(batches)
        # The same encoding as LoRA training: BOS+prompt+target+EOS, loss on target+EOS.
        enc = encode_examples(tokenizer, _pairs(batch), config.max_position_embeddings)
        # No attention mask: padding is on the right, so causal attention never lets a real
        # token see it, and padded positions carry label -100. This keeps SDPA's fast path.
        out = model(input_ids=enc.input_ids, labels=enc.labels)  # ids, labels: [B, T]
        loss = out.loss  # mean cross-entropy over the answer tokens of the batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, config)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if step in ck_steps:
            _save(root / "checkpoints" / f"step-{step}", model, tokenizer, provenance(step))
    bar.close()
    evaluation: dict[str, float] = {}
    if config.eval_examples:
        evaluation = _evaluate(
            model, tokenizer, eval_set(config.mix), config.eval_examples, 10_000 + config.seed
        )
    extra = {"eval_greedy_accuracy": evaluation, "checkpoints": sorted(ck_steps)}
    _save(root / "final", model, tokenizer, provenance(config.steps, **extra))


def builtin_root(data_dir: Path | str, name: str) -> Path:
    """Where ``builtin:<name>`` lives under a data directory."""
    return Path(data_dir) / "models" / f"builtin-{name}"


def _cached(root: Path, config: BuiltinConfig) -> Path | None:
    marker = root / "COMPLETE.json"
    if not marker.is_file() or not (root / "final" / "config.json").is_file():
        return None
    found = json.loads(marker.read_text()).get("fingerprint")
    if found != config.fingerprint():
        # Adapters were trained on the cached weights: keep them rather than retrain.
        warnings.warn(
            f"{root} was built with other settings (fingerprint {found}); using it anyway. "
            "Delete the directory to rebuild it.",
            stacklevel=3,
        )
    return _with_chat_template(root / "final")


CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers looks for a tokenizer's template


def _with_chat_template(final: Path) -> Path:
    """``final``, its tokenizer given the builtin chat template if it has none yet (weights
    built or installed before builtin models had one), so that chat buckets work on them."""
    path = final / CHAT_TEMPLATE_FILE
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(BUILTIN_CHAT_TEMPLATE)
            tmp.replace(path)  # atomic: another process may be doing the same
        except OSError as exc:  # a read-only data dir: serve without chat buckets
            warnings.warn(f"cannot give {final} a chat template: {exc}", stacklevel=2)
    return final


MANIFEST = "MANIFEST.json"


def pack_weights(root: Path, dest: Path) -> str:
    """Write a built model (``root``: its ``final`` and bootstrap ``checkpoints``) as the
    package ships it: ``final`` as built, the checkpoints (difficulty-ensemble members
    only) in float16 to halve their size, and a manifest of every file's sha256. Returns
    the manifest's sha256: the pin in :data:`SHIPPED_WEIGHTS`."""
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(root / "final", dest / "final")
    for checkpoint in builtin_checkpoints(root / "final"):
        target = dest / "checkpoints" / checkpoint.name
        shutil.copytree(checkpoint, target)
        weights = load_file(target / "model.safetensors")
        half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
        save_file(half, target / "model.safetensors", metadata={"format": "pt"})
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(dest)): sha256_file(p) for p in files}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return sha256_file(dest / MANIFEST)


def shipped_weights(config: BuiltinConfig) -> Path | None:
    """The directory of this exact configuration's shipped weights, if the package has it."""
    source = SHIPPED_DIR / config.name
    if config.name not in SHIPPED_WEIGHTS or not (source / MANIFEST).is_file():
        return None
    shipped = json.loads((source / "final" / "provenance.json").read_text())
    return source if shipped.get("fingerprint") == config.fingerprint() else None


def _install_shipped(config: BuiltinConfig, source: Path, root: Path) -> None:
    """Copy the shipped weights into ``root`` after checking the manifest against its pin
    and every file against the manifest."""
    pin, found = SHIPPED_WEIGHTS[config.name], sha256_file(source / MANIFEST)
    manifest = json.loads((source / MANIFEST).read_text())
    bad = [name for name, digest in manifest.items() if sha256_file(source / name) != digest]
    if found != pin or bad:
        raise RuntimeError(
            f"the shipped weights of {BUILTIN_PREFIX}{config.name} fail their sha256 check "
            f"({'manifest' if found != pin else ', '.join(bad)}): reinstall the package, or "
            f"train them with `lifelong builtin train --preset {config.name} --rebuild`"
        )
    for part in ("checkpoints", "final"):
        if (source / part).is_dir():

            def fill(tmp: Path, part: str = part) -> None:
                shutil.copytree(source / part, tmp, dirs_exist_ok=True)

            write_dir_atomically(root / part, fill)


def ensure_builtin_model(
    data_dir: Path | str,
    config: BuiltinConfig | None = None,
    progress: bool = True,
    shipped: bool = True,
) -> Path:
    """Path of the builtin model's ``final`` directory. On first use it is copied from the
    package's shipped weights (``shipped`` and the preset has them) or trained."""
    config = config or BuiltinConfig.preset(DEFAULT_PRESET)
    root = builtin_root(data_dir, config.name)
    if (path := _cached(root, config)) is not None:
        return path
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".builtin-{config.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be bootstrapping right now
        if (path := _cached(root, config)) is not None:
            return path
        shutil.rmtree(root, ignore_errors=True)  # leftovers of an interrupted bootstrap
        root.mkdir()
        if shipped and (source := shipped_weights(config)) is not None:
            _install_shipped(config, source, root)
        else:
            with _torch_threads(config.num_threads):
                _train(config, root, progress)
        write_json_atomically(
            root / "COMPLETE.json", {"fingerprint": config.fingerprint(), "config": asdict(config)}
        )
    return _with_chat_template(root / "final")


def builtin_checkpoints(model_dir: Path | str) -> list[Path]:
    """The bootstrap checkpoints beside a builtin ``final`` directory, earliest first."""
    ck = Path(model_dir).parent / "checkpoints"
    found = [p for p in ck.glob("step-*") if (p / "config.json").is_file()] if ck.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def resolve_base_model(spec: str, data_dir: Path | str, progress: bool = True) -> Path:
    """``builtin:<preset>`` -> its trained directory; otherwise an existing local HF directory."""
    if spec.startswith(BUILTIN_PREFIX):
        config = BuiltinConfig.preset(spec.removeprefix(BUILTIN_PREFIX))
        return ensure_builtin_model(data_dir, config, progress)
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"base model {spec!r} is neither {BUILTIN_PREFIX}<preset> (one of "
            f"{sorted(PRESETS)}) nor a local Hugging Face model directory with a config.json "
            "(models are never downloaded)"
        )
    return path.resolve()
