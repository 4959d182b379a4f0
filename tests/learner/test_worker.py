"""The learner worker on a real database with the micro builtin model and a GPT-2 model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft import PeftModel
from sqlalchemy import Engine, func, select
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from learner.builtin.families import make_examples
from learner.builtin.model import build_tokenizer
from learner.config import DifficultyConfig, LearnerConfig, LoraSettings, TeacherConfig
from learner.model import registry
from learner.model.loading import encode_examples, load_base
from learner.replay import ReplayStore
from learner.store import control, lease
from learner.store.buckets import bucket_catalog
from learner.store.db import write_transaction
from learner.store.evaluations import evaluated_bucket_ids
from learner.store.ingest import NewExample, ingest_batch
from learner.store.models import ItemDifficulty, ReplayState
from learner.store.teacher import latest_snapshot, recent_decisions
from learner.training.mixing import compose_batch, stream_sizes
from learner.worker import Learner

FAST = LearnerConfig(
    lora=LoraSettings(r=4, alpha=8),
    batch_size=8,
    candidate_every=4,
    checkpoint_every=2,
    poll_seconds=0.05,
    max_new_tokens=8,
    device="cpu",
)


def submit(engine: Engine, bucket: str, family: str, n: int = 60, seed: int = 0) -> None:
    examples = [NewExample(e["prompt"], e["target"]) for e in make_examples(family, n, 1, seed)]
    with write_transaction(engine) as conn:
        ingest_batch(conn, bucket, examples)


def make_learner(
    engine: Engine,
    tmp_path: Path,
    model_dir: Path,
    teacher: TeacherConfig | None = None,
    difficulty: DifficultyConfig | None = None,
    **overrides: object,
) -> Learner:
    config = LearnerConfig(**{**FAST.__dict__, **overrides})  # type: ignore[arg-type]
    return Learner(
        engine,
        config,
        tmp_path,
        model_dir,
        str(model_dir),
        holder="test-learner",
        teacher=teacher,
        difficulty=difficulty,
    )


def test_steps_version_and_identical_logits(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    submit(engine, "copy-l1", "copy")
    learner = make_learner(engine, tmp_path, micro_model_dir, max_steps=4)
    learner.run()
    assert learner.state.step == 4
    with engine.connect() as conn:
        versions = registry.list_versions(conn)
    assert [v.version for v in versions] == [1]
    saved = versions[0]
    assert saved.train_step == 4 and saved.parent_version is None
    assert saved.provenance["base_model"] == str(micro_model_dir)
    assert saved.provenance["data_seen"] == {"copy-l1": 32}
    assert saved.gate_report is not None and saved.gate_report["summary"]
    assert saved.path == "adapters/v00001"  # relative to the data dir
    path = registry.resolve_path(tmp_path, saved.path)
    assert registry.sha256_file(path / registry.ADAPTER_WEIGHTS) == saved.sha256

    # The saved version, loaded with plain peft, computes what the learner computed.
    batch = encode_examples(learner.parts.trainer.tokenizer, [("copy ab =", "ab")], 64)
    learner.parts.trainer.model.eval()
    with torch.no_grad():
        expected = learner.parts.trainer.model(input_ids=batch.input_ids).logits
        base = AutoModelForCausalLM.from_pretrained(micro_model_dir)
        loaded = PeftModel.from_pretrained(base, str(path)).eval()
        got = loaded(input_ids=batch.input_ids).logits
    torch.testing.assert_close(got, expected)


def test_resumes_from_checkpoint(engine: Engine, tmp_path: Path, micro_model_dir: Path) -> None:
    submit(engine, "copy-l1", "copy")
    first = make_learner(engine, tmp_path, micro_model_dir, max_steps=3, candidate_every=100)
    first.run()
    state = first.parts.trainer.model.state_dict()
    weights = {k: v.clone() for k, v in state.items() if "lora_" in k}
    second = make_learner(engine, tmp_path, micro_model_dir, max_steps=5, candidate_every=100)
    second.wait_for_lease(threading.Event())
    second.setup()
    assert second.state.step == 3
    assert second.state.rng == first.rng.bit_generator.state
    for key, value in second.parts.trainer.model.state_dict().items():
        if key in weights:
            torch.testing.assert_close(value, weights[key])
    lease.release(engine, second.lease.holder)
    second.run()
    assert second.state.step == 5


def test_pause_stops_training(engine: Engine, tmp_path: Path, micro_model_dir: Path) -> None:
    submit(engine, "copy-l1", "copy")
    with write_transaction(engine) as conn:
        control.submit_command(conn, "pause", "test")
    learner = make_learner(engine, tmp_path, micro_model_dir)
    learner.wait_for_lease(threading.Event())
    learner.setup()
    assert learner.tick() is False and learner.paused
    with write_transaction(engine) as conn:
        control.submit_command(conn, "resume", "test")
    assert learner.tick() is True and learner.state.step == 1
    learner.parts.close()
    lease.release(engine, learner.lease.holder)


def test_second_learner_waits_for_the_lease(engine: Engine) -> None:
    assert lease.try_acquire(engine, "a", ttl=30)
    assert not lease.try_acquire(engine, "b", ttl=30)
    assert lease.heartbeat(engine, "a")
    lease.release(engine, "a")
    assert lease.try_acquire(engine, "b", ttl=30)
    assert not lease.heartbeat(engine, "a")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_gpt2_architecture(engine: Engine, tmp_path: Path) -> None:
    """Any local Hugging Face causal LM works: here a GPT-2 initialised and saved locally."""
    tokenizer = build_tokenizer()
    model_dir = tmp_path / "gpt2-local"
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    submit(engine, "reverse-l1", "reverse")
    learner = make_learner(engine, tmp_path, model_dir, max_steps=4)
    learner.run()
    with engine.connect() as conn:
        (version,) = registry.list_versions(conn)
    path = registry.resolve_path(tmp_path, version.path)
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    assert any(m.endswith("attn.c_attn") for m in adapter_config["target_modules"])
    base, _ = load_base(model_dir, torch.device("cpu"))
    loaded = PeftModel.from_pretrained(base, str(path))
    assert loaded.peft_config["default"].r == FAST.lora.r


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_trains_on_cuda(engine: Engine, tmp_path: Path, micro_model_dir: Path) -> None:
    submit(engine, "copy-l1", "copy")
    learner = make_learner(engine, tmp_path, micro_model_dir, max_steps=4, device="cuda")
    learner.run()
    assert learner.state.step == 4
    assert next(learner.parts.trainer.model.parameters()).device.type == "cuda"


def test_trains_through_the_replay_store(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    """Per-example losses become priorities in SQL; anchors come from alignment buckets."""
    submit(engine, "copy-l1", "copy")
    examples = make_examples("alignment", 40, 1, 0)
    with write_transaction(engine) as conn:
        ingest_batch(conn, "align", [NewExample(e["prompt"], e["target"]) for e in examples],
                     kind="alignment")  # fmt: skip
    learner = make_learner(engine, tmp_path, micro_model_dir, max_steps=6, candidate_every=100)
    learner.run()
    seen = learner.state.seen_per_bucket
    assert set(seen) == {"copy-l1", "align"} and sum(seen.values()) == 6 * FAST.batch_size
    with engine.connect() as conn:
        rows = conn.execute(
            select(ReplayState.priority, ReplayState.last_loss, ReplayState.times_sampled)
            .where(ReplayState.times_sampled > 0)
        ).all()  # fmt: skip
    assert rows, "no priority was written back"
    for priority, last_loss, _ in rows:
        assert priority == pytest.approx(last_loss + learner.spec.replay.eps)


def test_anchors_carry_their_weight_and_the_rest_importance_weights(engine: Engine) -> None:
    submit(engine, "copy-l1", "copy")
    examples = make_examples("alignment", 40, 1, 0)
    with write_transaction(engine) as conn:
        ingest_batch(conn, "align", [NewExample(e["prompt"], e["target"]) for e in examples],
                     kind="alignment")  # fmt: skip
    store = ReplayStore(engine)
    try:
        rng = np.random.default_rng(0)
        batch = compose_batch(store, rng, "copy-l1", ["align"], 16, 0.5, 0.3, anchor_weight=3.0)
    finally:
        store.close()
    buckets = [e.bucket for e in batch.examples]
    assert buckets[:8] == ["copy-l1"] * 8 and buckets[8:13] == ["align"] * 5
    assert list(batch.weights[8:13]) == [3.0] * 5
    others = np.concatenate([batch.weights[:8], batch.weights[13:]])
    assert others.min() > 0 and others.max() <= 1.0


def test_uniform_anchors_cover_every_alignment_bucket_by_size(engine: Engine) -> None:
    """Anchors are drawn uniformly over all alignment buckets together: a bucket's share
    follows its size, and every anchor example is drawn alike (priorities ignored)."""
    submit(engine, "copy-l1", "copy")
    sizes = {"align-small": 10, "align-big": 90}
    with write_transaction(engine) as conn:
        for name, n in sizes.items():
            examples = [NewExample(f"{name} request {i} =", "ok") for i in range(n)]
            ingest_batch(conn, name, examples, kind="alignment", probe_tenths=0)
    store = ReplayStore(engine)
    try:
        rng = np.random.default_rng(0)
        drawn: list[str] = []
        for _ in range(100):
            batch = compose_batch(store, rng, "copy-l1", list(sizes), 20, 0.5, 0.5)
            assert list(batch.anchor) == [False] * 10 + [True] * 10
            drawn += [e.bucket for e, a in zip(batch.examples, batch.anchor, strict=True) if a]
        # One high-priority example does not attract the draws.
        ids, _ = store.probabilities(1, bucket="align-big")
        store.update_priorities(ids[:1], [1e6])
        after_update = [compose_batch(store, rng, "copy-l1", list(sizes), 20, 0.5, 0.5)
                       for _ in range(20)]  # fmt: skip
    finally:
        store.close()
    small_share = drawn.count("align-small") / len(drawn)
    assert 0.06 < small_share < 0.14, small_share  # 10% of the anchor examples
    top = sum(int(i) == int(ids[0]) for b in after_update for i in b.ids[b.anchor])
    assert top < 20, top  # ~2 of 200 draws uniformly; by priority nearly all 200


def test_stream_sizes() -> None:
    assert stream_sizes(16, 0.5, 0.2, has_anchor=True) == (8, 3, 5)
    assert stream_sizes(16, 0.5, 0.2, has_anchor=False) == (8, 0, 8)
    assert stream_sizes(1, 0.5, 0.2, has_anchor=True) == (1, 0, 0)
    assert sum(stream_sizes(7, 0.9, 0.1, has_anchor=True)) == 7


def test_teacher_chooses_rounds_and_is_restored(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    """Each round's focus comes from the policy; its decision row holds every arm's score,
    the reason and the round's outcome; the teacher state travels with the checkpoint."""
    submit(engine, "copy-l1", "copy", n=80)
    submit(engine, "reverse-l1", "reverse", n=80)
    teacher = TeacherConfig(policy="round_robin", round_steps=2, eval_probes=4)
    first = make_learner(engine, tmp_path, micro_model_dir, teacher, max_steps=8,
                         candidate_every=100)  # fmt: skip
    first.run()
    with engine.connect() as conn:
        decisions = recent_decisions(conn, 10)[::-1]
        snapshot = latest_snapshot(conn)
    assert [d.bucket for d in decisions] == ["copy-l1", "reverse-l1"] * 2
    for d in decisions:
        assert set(d.scores) == {"copy-l1", "reverse-l1"} and d.reason.startswith("round_robin")
        assert d.steps == 2 and d.loss is not None and d.policy == "round_robin"
        assert d.accuracy is not None and 0.0 <= d.accuracy <= 1.0
    assert snapshot is not None and snapshot.step == 8 and snapshot.policy == "round_robin"
    assert snapshot.state["probes_answered"] > 0
    assert first.status()["teacher"]["policy"] == "round_robin"
    with engine.connect() as conn:
        held = lease.read_lease(conn)
    assert held is not None and held.state["step"] == 8  # rounds keep the status fresh

    second = make_learner(engine, tmp_path, micro_model_dir, teacher, max_steps=12,
                          candidate_every=100)  # fmt: skip
    second.wait_for_lease(threading.Event())
    second.setup()
    assert second.curriculum.state_dict() == first.curriculum.state_dict()
    lease.release(engine, second.lease.holder)
    second.run()
    with engine.connect() as conn:
        buckets = [d.bucket for d in recent_decisions(conn, 10)[::-1]]
    assert buckets == ["copy-l1", "reverse-l1"] * 3  # the rotation went on where it was


def run_on_two_buckets(
    engine: Engine, tmp_path: Path, model_dir: Path, teacher: TeacherConfig, candidate_every: int
) -> Learner:
    """copy-l1 and reverse-l1 submitted, then 4 steps of a learner with this teacher."""
    submit(engine, "copy-l1", "copy", n=80)
    submit(engine, "reverse-l1", "reverse", n=80)
    learner = make_learner(engine, tmp_path, model_dir, teacher, max_steps=4,
                           candidate_every=candidate_every)  # fmt: skip
    learner.run()
    return learner


def test_new_buckets_get_a_placement_evaluation_before_their_first_round(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    """Each bucket is evaluated once, untrained, before the teacher first decides on it:
    after one round each, lp_zpd has two points of each bucket's progress (placement and
    round end), and only the round-end one is in its stall window."""
    teacher = TeacherConfig(policy="lp_zpd", round_steps=2, eval_probes=4)
    learner = run_on_two_buckets(engine, tmp_path, micro_model_dir, teacher, candidate_every=100)
    with engine.connect() as conn:
        decisions = recent_decisions(conn, 10)
    assert sorted(d.bucket for d in decisions) == ["copy-l1", "reverse-l1"]
    policy: Any = learner.curriculum.policy
    for arm in ("copy-l1", "reverse-l1"):
        assert policy.slopes.count(arm) == 2, arm
        assert policy.stalls.evaluated(arm) == 1, arm
    assert len(learner.curriculum.evidence) == 8  # both buckets' 4 probes, answered


def test_a_candidate_is_judged_on_buckets_it_was_not_trained_on(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    """A bucket the model knows when it arrives gets no round, so only the gate keeps it
    known: every active task bucket is in every candidate's evaluation, trained or not."""
    teacher = TeacherConfig(policy="round_robin", round_steps=4, eval_probes=4)
    run_on_two_buckets(engine, tmp_path, micro_model_dir, teacher, candidate_every=4)
    with engine.connect() as conn:
        decisions = recent_decisions(conn, 10)
        evaluated = evaluated_bucket_ids(conn, 1)
        names = {b.id: name for name, b in bucket_catalog(conn).items()}
    assert [d.bucket for d in decisions] == ["copy-l1"]  # one round: reverse-l1 untrained
    assert {"copy-l1", "reverse-l1"} <= {names[i] for i in evaluated}


def test_learner_scores_difficulty_in_the_background(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    submit(engine, "copy-l1", "copy", n=30)
    difficulty = DifficultyConfig(batch_size=16, idle_seconds=0.05, min_items=4)
    learner = make_learner(engine, tmp_path, micro_model_dir, difficulty=difficulty,
                           max_steps=4, candidate_every=100)  # fmt: skip
    learner.wait_for_lease(threading.Event())
    learner.setup()
    learner.start_scorer()
    assert learner.scorer is not None
    try:
        deadline = time.monotonic() + 60
        while learner.scorer.fitted_items < 30 and time.monotonic() < deadline:
            learner.tick()
    finally:
        learner.stop_scorer()
        learner.parts.close()
        lease.release(engine, learner.lease.holder)
    with engine.connect() as conn:
        fitted = conn.execute(select(func.count()).select_from(ItemDifficulty)).scalar_one()
    assert fitted == 30
    learner.parts.rounds.refresh_difficulties(learner.parts.batches.buckets)
    assert set(learner.curriculum.difficulty) == {"copy-l1"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_bad_ensemble_member_leaves_training_running(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    submit(engine, "copy-l1", "copy")
    difficulty = DifficultyConfig(members=(str(tmp_path / "missing"),))
    learner = make_learner(engine, tmp_path, micro_model_dir, difficulty=difficulty, max_steps=2)
    learner.run()
    assert learner.state.step == 2 and learner.scorer is None


def test_examples_submitted_after_start_are_trained(
    engine: Engine, tmp_path: Path, micro_model_dir: Path
) -> None:
    # A learner started on an empty database once never noticed later data: the replay
    # index refreshed only inside sample(), which an idle learner never calls.
    learner = make_learner(engine, tmp_path, micro_model_dir, max_steps=3, candidate_every=100)
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # idle on an empty database for a few polls
        assert learner.state.step == 0
        submit(engine, "copy-l1", "copy")
        thread.join(60)
        assert not thread.is_alive(), "the learner did not train on the new examples"
        assert learner.state.step == 3
    finally:
        stop.set()
        thread.join(10)
