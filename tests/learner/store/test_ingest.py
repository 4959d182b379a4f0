"""Ingestion and API keys at the storage layer, on SQLite and PostgreSQL (``engine``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Engine, func, select

from learner.store.buckets import count_examples, get_bucket
from learner.store.db import write_transaction
from learner.store.ingest import (
    IngestError,
    IngestLimits,
    IngestResult,
    NewExample,
    content_hash,
    ingest_batch,
    split_for_hash,
)
from learner.store.keys import (
    KEY_PREFIX,
    Principal,
    count_active_keys,
    create_key,
    hash_key,
    list_keys,
    lookup_key,
    parse_key_list,
    revoke_key,
)
from learner.store.models import Bucket, Example

# --------------------------------------------------------------------------- helpers


def ingest(
    engine: Engine,
    bucket: str,
    examples: Sequence[NewExample],
    **kwargs: object,
) -> IngestResult:
    with write_transaction(engine) as conn:
        return ingest_batch(conn, bucket, examples, **kwargs)  # type: ignore[arg-type]


def make_examples(n: int, prefix: str = "q", start: int = 0) -> list[NewExample]:
    return [
        NewExample(f"{prefix}{i}: what is {i} + {i}?", str(2 * i), f"{prefix}-{i}")
        for i in range(start, start + n)
    ]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return count_examples(conn)


def stored(engine: Engine, bucket: str) -> dict[tuple[str, str], Example]:
    """The bucket's examples keyed by (prompt, target)."""
    query = (
        select(Example.__table__)
        .join(Bucket, Bucket.id == Example.bucket_id)
        .where(Bucket.name == bucket)
        .order_by(Example.id)
    )
    with engine.connect() as conn:
        rows = [Example(**row._mapping) for row in conn.execute(query)]
    return {(r.prompt, r.target): r for r in rows}


def bucket_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(Bucket.name)).scalars())


# --------------------------------------------------------------------------- storing


def test_batch_is_stored_with_hash_split_and_client(engine: Engine) -> None:
    examples = make_examples(50)
    result = ingest(engine, "arith", examples, client="alice")
    assert result == IngestResult(bucket="arith", accepted=50, duplicates=0)
    assert count(engine) == 50

    rows = stored(engine, "arith")
    assert set(rows) == {(e.prompt, e.target) for e in examples}
    for ex in examples:
        row = rows[(ex.prompt, ex.target)]
        assert row.content_hash == content_hash("arith", ex.prompt, ex.target)
        assert row.split == split_for_hash(row.content_hash)
        assert row.external_id == ex.external_id
        assert row.client == "alice"
        assert row.created_at is not None


def test_new_bucket_gets_defaults_or_the_requested_kind_and_grader(engine: Engine) -> None:
    ingest(engine, "plain", make_examples(1))
    ingest(engine, "numbers", make_examples(1), kind="alignment", grader="numeric")
    with engine.connect() as conn:
        plain = get_bucket(conn, "plain")
        numbers = get_bucket(conn, "numbers")
    assert plain is not None and (plain.kind, plain.grader, plain.status) == (
        "task",
        "exact",
        "active",
    )
    assert numbers is not None and (numbers.kind, numbers.grader) == ("alignment", "numeric")
    # Naming the same settings again, or none at all, is fine.
    assert ingest(engine, "numbers", make_examples(1, start=1), kind="alignment").accepted == 1
    assert ingest(engine, "numbers", make_examples(1, start=2), grader="numeric").accepted == 1
    assert ingest(engine, "numbers", make_examples(1, start=3)).accepted == 1
    with engine.connect() as conn:
        numbers = get_bucket(conn, "numbers")
    assert numbers is not None
    assert numbers.train_examples + numbers.probe_examples == 4


def test_duplicates_within_one_batch(engine: Engine) -> None:
    a = NewExample("a prompt", "a target", "first")
    b = NewExample("b prompt", "b target")
    a_again = NewExample("a prompt", "a target", "second")
    result = ingest(engine, "dups", [a, b, a_again, a])
    assert (result.accepted, result.duplicates) == (2, 2)
    assert count(engine) == 2
    # The first occurrence wins; the later ones are no-ops.
    assert stored(engine, "dups")[("a prompt", "a target")].external_id == "first"


def test_duplicates_across_batches(engine: Engine) -> None:
    first = make_examples(10)
    assert ingest(engine, "dups", first).accepted == 10
    again = ingest(engine, "dups", first)
    assert (again.accepted, again.duplicates) == (0, 10)
    overlapping = [*first[5:], *make_examples(3, start=10), first[0]]
    result = ingest(engine, "dups", overlapping)
    assert (result.accepted, result.duplicates) == (3, 6)
    assert count(engine) == 13


def max_id(engine: Engine, table: type[Bucket] | type[Example]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(table.id))).scalar_one())


def test_resubmissions_do_not_use_up_ids(engine: Engine) -> None:
    """Known hashes and buckets are skipped before the insert: on PostgreSQL a row that
    reaches ``ON CONFLICT DO NOTHING`` has already taken a sequence value."""
    batch = make_examples(20)
    assert ingest(engine, "again", batch).accepted == 20
    last_example, last_bucket = max_id(engine, Example), max_id(engine, Bucket)
    for _ in range(3):
        result = ingest(engine, "again", batch)
        assert (result.accepted, result.duplicates) == (0, 20)
    # A partly known batch reports the same counts as before the change.
    mixed = [*batch[:5], *make_examples(1, start=20), batch[0]]
    assert ingest(engine, "again", mixed) == IngestResult("again", accepted=1, duplicates=6)
    assert max_id(engine, Example) == last_example + 1  # the next id after the first batch
    assert ingest(engine, "another", make_examples(1)).accepted == 1
    assert max_id(engine, Bucket) == last_bucket + 1
    assert max_id(engine, Example) == last_example + 2


def test_same_content_in_another_bucket_is_not_a_duplicate(engine: Engine) -> None:
    examples = make_examples(5)
    assert ingest(engine, "one", examples).accepted == 5
    assert ingest(engine, "two", examples).accepted == 5
    assert count(engine) == 10
    one, two = stored(engine, "one"), stored(engine, "two")
    for key in one:
        assert one[key].content_hash != two[key].content_hash


def test_content_hash_is_unambiguous() -> None:
    assert content_hash("b", "ab", "c") != content_hash("b", "a", "bc")
    assert content_hash("b", "x", "y") != content_hash("c", "x", "y")
    assert content_hash("b", 'say "hi"', "ok") != content_hash("b", "say ", 'hi" ok')
    assert content_hash("b", "x", "y") == content_hash("b", "x", "y")
    assert len(content_hash("b", "x", "y")) == 64


# --------------------------------------------------------------------------- atomicity


def test_bucket_kind_or_grader_conflict_is_409_and_stores_nothing(engine: Engine) -> None:
    ingest(engine, "fixed", make_examples(3), kind="task", grader="exact")
    for kwargs in ({"kind": "alignment"}, {"grader": "numeric"}):
        with pytest.raises(IngestError) as caught:
            ingest(engine, "fixed", make_examples(20, start=100), **kwargs)
        assert caught.value.status == 409
        assert "already exists" in str(caught.value)
        assert count(engine) == 3
    with engine.connect() as conn:
        bucket = get_bucket(conn, "fixed")
    assert bucket is not None and (bucket.kind, bucket.grader) == ("task", "exact")


def test_invalid_item_rejects_the_whole_batch(engine: Engine) -> None:
    ingest(engine, "existing", make_examples(4))
    limits = IngestLimits(max_examples=100, max_prompt_chars=50, max_target_chars=20)
    bad_batches = {
        "empty prompt": [*make_examples(30, start=10), NewExample("", "t")],
        "empty target": [*make_examples(30, start=10), NewExample("p", "")],
        "long target": [*make_examples(30, start=10), NewExample("p", "x" * 21)],
        "long prompt": [*make_examples(30, start=10), NewExample("p" * 51, "t")],
    }
    for bucket in ("existing", "brand-new"):
        for label, batch in bad_batches.items():
            with pytest.raises(IngestError) as caught:
                ingest(engine, bucket, batch, limits=limits)
            assert caught.value.status == 422, label
            assert "examples[30]." in str(caught.value), label
            assert count(engine) == 4, label
    # The rejected batch did not even create its bucket.
    assert bucket_names(engine) == {"existing"}


def test_failure_later_in_the_transaction_rolls_everything_back(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_transaction(engine) as conn:
        result = ingest_batch(conn, "doomed", make_examples(25))
        assert result.accepted == 25
        raise RuntimeError("the caller fails after ingesting")
    assert count(engine) == 0
    assert bucket_names(engine) == set()


BAD_SPECS = [
    ("with space", None, None, "bucket name"),
    ("a/b", None, None, "bucket name"),
    ("ünïcode", None, None, "bucket name"),
    ("", None, None, "bucket name"),
    ("x" * 65, None, None, "bucket name"),
    ("-leading-dash", None, None, "bucket name"),
    ("trailing-newline\n", None, None, "bucket name"),
    ("ok", "curriculum", None, "unknown bucket kind"),
    ("ok", None, "fuzzy", "unknown grader"),
]


def test_bad_bucket_spec_is_422(engine: Engine, subtests: pytest.Subtests) -> None:
    for name, kind, grader, message in BAD_SPECS:
        with subtests.test(repr(name), kind=kind, grader=grader):
            with pytest.raises(IngestError) as caught:
                ingest(engine, name, make_examples(2), kind=kind, grader=grader)
            assert caught.value.status == 422
            assert message in str(caught.value)
            assert count(engine) == 0
            assert bucket_names(engine) == set()


def test_longest_valid_bucket_name_is_accepted(engine: Engine) -> None:
    name = "b" * 64
    assert ingest(engine, name, make_examples(1)).accepted == 1
    assert bucket_names(engine) == {name}


def test_batch_size_limits(engine: Engine) -> None:
    limits = IngestLimits(max_examples=10)
    assert ingest(engine, "sized", make_examples(10), limits=limits).accepted == 10
    with pytest.raises(IngestError) as caught:
        ingest(engine, "sized", make_examples(11, start=100), limits=limits)
    assert caught.value.status == 413
    assert "11 examples in one request, the limit is 10" in str(caught.value)
    with pytest.raises(IngestError) as caught:
        ingest(engine, "sized", [])
    assert caught.value.status == 422
    assert "at least one example" in str(caught.value)
    assert count(engine) == 10


def test_ingest_limits_must_be_positive() -> None:
    for kwargs in ({"max_examples": 0}, {"max_prompt_chars": 0}, {"max_target_chars": -1}):
        with pytest.raises(ValueError, match="positive"):
            IngestLimits(**kwargs)


def test_limits_count_characters_not_bytes(engine: Engine) -> None:
    limits = IngestLimits(max_prompt_chars=4, max_target_chars=4)
    result = ingest(engine, "unicode", [NewExample("ääää", "🙂🙂🙂🙂")], limits=limits)
    assert result.accepted == 1
    assert ("ääää", "🙂🙂🙂🙂") in stored(engine, "unicode")


# --------------------------------------------------------------------------- split


def test_split_for_hash_reads_the_leading_hex_digits() -> None:
    tail = "f" * 56
    assert split_for_hash("00000000" + tail) == "probe"
    assert split_for_hash("0000000a" + tail) == "probe"  # 10 % 10 == 0
    assert split_for_hash("00000001" + tail) == "train"
    assert split_for_hash("00000009" + tail) == "train"


def test_probe_split_is_about_ten_percent_and_stable(engine: Engine) -> None:
    examples = make_examples(2000, prefix="item")
    for start in range(0, 2000, 500):
        ingest(engine, "big", examples[start : start + 500])
    first = stored(engine, "big")
    assert len(first) == 2000
    probes = sum(1 for row in first.values() if row.split == "probe")
    assert 160 <= probes <= 240, probes  # 10% +- 2%
    for (prompt, target), row in first.items():
        assert row.split == split_for_hash(content_hash("big", prompt, target))

    # Resubmitting (in another order and batching) changes nothing.
    again = ingest(engine, "big", list(reversed(examples))[:1500])
    assert (again.accepted, again.duplicates) == (0, 1500)
    second = stored(engine, "big")
    assert {k: (r.id, r.split) for k, r in second.items()} == {
        k: (r.id, r.split) for k, r in first.items()
    }

    with engine.connect() as conn:
        summary = get_bucket(conn, "big")
    assert summary is not None
    assert (summary.probe_examples, summary.train_examples) == (probes, 2000 - probes)


# --------------------------------------------------------------------------- keys


def test_keys_create_lookup_revoke_list(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        admin = create_key(conn, "admin", "ops")
        reader = create_key(conn, "read", "dashboard")
    assert admin.startswith(KEY_PREFIX) and reader.startswith(KEY_PREFIX)
    assert admin != reader and len(admin) > 40

    with engine.connect() as conn:
        assert lookup_key(conn, admin) == Principal(name="ops", scope="admin")
        assert lookup_key(conn, reader) == Principal(name="dashboard", scope="read")
        assert lookup_key(conn, admin + "x") is None
        assert lookup_key(conn, "") is None
        keys = list_keys(conn)
        assert count_active_keys(conn) == 2
    assert [(k.name, k.scope, k.revoked_at) for k in keys] == [
        ("ops", "admin", None),
        ("dashboard", "read", None),
    ]
    # Only the hash is stored.
    assert [k.key_hash for k in keys] == [hash_key(admin), hash_key(reader)]
    assert all(admin not in str(k.key_hash) for k in keys)

    reader_id = keys[1].id
    with write_transaction(engine) as conn:
        assert revoke_key(conn, reader_id) is True
        assert revoke_key(conn, reader_id) is False  # already revoked
        assert revoke_key(conn, 10_000) is False  # no such key
    with engine.connect() as conn:
        assert lookup_key(conn, reader) is None
        assert lookup_key(conn, admin) == Principal(name="ops", scope="admin")
        assert count_active_keys(conn) == 1
        after = list_keys(conn)
    assert after[0].revoked_at is None
    assert after[1].revoked_at is not None


def test_create_key_rejects_an_unknown_scope(engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown scope"), write_transaction(engine) as conn:
        create_key(conn, "root", "nope")
    with engine.connect() as conn:
        assert list_keys(conn) == []


def test_scopes_are_ordered() -> None:
    admin, submit, read = (Principal("k", s) for s in ("admin", "submit", "read"))
    assert admin.allows("admin") and admin.allows("submit") and admin.allows("read")
    assert not submit.allows("admin") and submit.allows("submit") and submit.allows("read")
    assert not read.allows("admin") and not read.allows("submit") and read.allows("read")


def test_parse_key_list() -> None:
    parsed = parse_key_list(" admin:aaa , submit:bbb,,read:c:d, ")
    assert parsed == {
        hash_key("aaa"): Principal("env-1", "admin"),
        hash_key("bbb"): Principal("env-2", "submit"),
        hash_key("c:d"): Principal("env-4", "read"),
    }
    assert parse_key_list("") == {}
    assert parse_key_list(" , ") == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("justakey", "entry 1 is not of the form scope:key"),
        ("admin:ok,submit:", "entry 2 is not of the form scope:key"),
        ("root:abc", "unknown scope 'root'"),
        (":abc", "unknown scope ''"),
        ("Admin:abc", "unknown scope 'Admin'"),
    ],
)
def test_parse_key_list_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_key_list(spec)
    assert message in str(caught.value)
