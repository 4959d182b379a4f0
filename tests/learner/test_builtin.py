"""The builtin model: a plain Hugging Face directory, trained once, cached, atomically written."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.builtin import families as tasks, model as builtin
from learner.builtin.model import BuiltinConfig

MICRO = BuiltinConfig.preset("micro")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def micro(data_dir: Path) -> Path:
    return builtin.ensure_builtin_model(data_dir, MICRO, progress=False)


def test_loads_with_plain_auto_classes(micro: Path) -> None:
    assert micro == data_dir_of(micro) / "models" / "builtin-micro" / "final"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (micro / name).is_file()
    model = AutoModelForCausalLM.from_pretrained(micro)
    tok = AutoTokenizer.from_pretrained(micro)
    assert model.config.model_type == "llama"
    assert model.config.max_position_embeddings >= 256
    assert model.config.vocab_size == len(tok)
    enc = tok(["reverse abc =", "copy x ="], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, enc["input_ids"].shape[1], len(tok))
    scores = builtin.evaluate_families(micro, [("copy", 1), ("alignment", 3)], n=3)
    assert set(scores) == {"copy-l1", "alignment-l3"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def data_dir_of(final: Path) -> Path:
    return final.parents[2]


def test_tokenizer_round_trips_every_character(micro: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro)
    special = set(tok.all_special_ids)
    named = {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token}
    assert named <= set(tok.all_special_tokens)
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    for ch in chars:
        ids = tok(ch, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] not in special, repr(ch)
        assert tok.decode(ids) == ch
    text = "".join(chars) + "  don't , . ?"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_checkpoints_exist_and_are_ordered(micro: Path) -> None:
    checkpoints = builtin.builtin_checkpoints(micro)
    assert len(checkpoints) == MICRO.num_checkpoints == 3
    steps = [int(p.name.removeprefix("step-")) for p in checkpoints]
    assert steps == sorted(steps) and steps[-1] < MICRO.steps
    for path in checkpoints:
        assert (path / "model.safetensors").is_file()
        assert json.loads((path / "provenance.json").read_text())["step"] == int(path.name[5:])
        AutoModelForCausalLM.from_pretrained(path)
    leftovers = [p for p in micro.parents[0].rglob(".*tmp*")]
    assert not leftovers


def test_provenance_records_training_and_loss_went_down(micro: Path) -> None:
    prov = json.loads((micro / "provenance.json").read_text())
    assert prov["model"] == "builtin:micro"
    assert prov["seed"] == MICRO.seed and prov["steps"] == prov["step"] == MICRO.steps
    assert prov["config"] == dataclasses.asdict(MICRO) | {"mix": prov["config"]["mix"]}
    assert prov["fingerprint"] == MICRO.fingerprint()
    assert prov["parameters"] > 0
    assert prov["loss"]["final"] < prov["loss"]["initial"] - 0.5
    evaluated = {f"{f}-l{lvl}" for f, lvl in builtin.eval_set(MICRO.mix)}
    assert set(prov["eval_greedy_accuracy"]) == evaluated >= {f"{f}-l1" for f in tasks.FAMILIES}


def test_second_call_is_cached_and_fast(micro: Path) -> None:
    weights = micro / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    start = time.perf_counter()
    again = builtin.ensure_builtin_model(data_dir_of(micro), MICRO, progress=False)
    assert time.perf_counter() - start < 0.5
    assert again == micro and weights.stat().st_mtime_ns == mtime
    assert builtin.resolve_base_model("builtin:micro", data_dir_of(micro)) == micro


def test_resolve_base_model(micro: Path, tmp_path: Path) -> None:
    assert builtin.resolve_base_model(str(micro), tmp_path) == micro.resolve()
    with pytest.raises(ValueError, match="unknown builtin preset"):
        builtin.resolve_base_model("builtin:huge", tmp_path)
    with pytest.raises(ValueError, match=r"config\.json"):
        builtin.resolve_base_model(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(ValueError, match=r"config\.json"):
        builtin.resolve_base_model(str(tmp_path), tmp_path)  # a directory, but no model
    with pytest.raises(ValueError):
        builtin.resolve_base_model("meta-llama/Llama-3-8B", tmp_path)  # never downloads


def test_max_context_chars(micro: Path) -> None:
    assert builtin.max_context_chars(micro) == MICRO.max_position_embeddings - 2 >= 254


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Bad Name"},
        {"hidden_size": 0},
        {"num_heads": 3},
        {"max_position_embeddings": 128},
        {"steps": 3, "num_checkpoints": 3},
        {"learning_rate": -1.0},
        {"mix": (("copy", 9, 1.0),)},
    ],
)
def test_config_is_validated(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(MICRO, **change)  # type: ignore[arg-type]


def test_presets() -> None:
    tiny = BuiltinConfig.preset("tiny")
    assert tiny == BuiltinConfig() and tiny.name == "tiny"
    assert MICRO.hidden_size < tiny.hidden_size and MICRO.steps < tiny.steps
    assert tiny.fingerprint() != MICRO.fingerprint()


def test_interrupted_bootstrap_is_redone(tmp_path: Path) -> None:
    config = dataclasses.replace(MICRO, name="redo", steps=8, num_checkpoints=1, eval_examples=0)
    root = builtin.builtin_root(tmp_path, "redo")
    (root / "final").mkdir(parents=True)
    (root / "final" / "junk").write_text("half-written")  # no COMPLETE.json: not trusted
    final = builtin.ensure_builtin_model(tmp_path, config, progress=False)
    assert not (final / "junk").exists() and (final / "model.safetensors").is_file()
    # A changed setting under the same name keeps the cached weights, with a warning.
    marker = root / "COMPLETE.json"
    marker.write_text(json.dumps({"fingerprint": "something-else"}))
    with pytest.warns(UserWarning, match="other settings"):
        assert builtin.ensure_builtin_model(tmp_path, config, progress=False) == final


@pytest.mark.parametrize("name", sorted(builtin.SHIPPED_WEIGHTS))
def test_a_shipped_preset_installs_in_seconds(tmp_path: Path, name: str) -> None:
    config = BuiltinConfig.preset(name)
    source = builtin.shipped_weights(config)
    assert source is not None, "the shipped weights do not match the preset: pack them again"
    started = time.monotonic()
    final = builtin.ensure_builtin_model(tmp_path, config, progress=False)
    assert time.monotonic() - started < 30  # copied and checked, not trained
    manifest = json.loads((source / builtin.MANIFEST).read_text())
    assert builtin.sha256_file(final / "model.safetensors") == manifest["final/model.safetensors"]
    every = config.steps // (config.num_checkpoints + 1)
    assert [p.name for p in builtin.builtin_checkpoints(final)] == [
        f"step-{every * i}" for i in range(1, config.num_checkpoints + 1)
    ]
    provenance = json.loads((final / "provenance.json").read_text())
    assert provenance["fingerprint"] == config.fingerprint()
    assert provenance["steps"] == config.steps


def test_the_default_preset_ships_its_weights() -> None:
    assert builtin.DEFAULT_PRESET in builtin.SHIPPED_WEIGHTS


def test_packed_weights_install_as_built_and_damage_is_refused(
    micro: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "shipped"
    pin = builtin.pack_weights(micro.parent, shipped / "micro")
    monkeypatch.setattr(builtin, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(builtin, "SHIPPED_WEIGHTS", {"micro": pin})
    config = BuiltinConfig.preset("micro")
    final = builtin.ensure_builtin_model(tmp_path / "a", config, progress=False)
    assert (final / "model.safetensors").read_bytes() == (micro / "model.safetensors").read_bytes()
    [checkpoint, *_] = builtin.builtin_checkpoints(final)
    half = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    full = AutoModelForCausalLM.from_pretrained(micro.parent / "checkpoints" / checkpoint.name)
    for a, b in zip(half.parameters(), full.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-2, rtol=1e-2)  # float16 on disk

    weights = shipped / "micro" / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match=r"sha256 check.*final/model\.safetensors"):
        builtin.ensure_builtin_model(tmp_path / "b", config, progress=False)
    assert not (tmp_path / "b" / "models" / "builtin-micro" / "COMPLETE.json").exists()
