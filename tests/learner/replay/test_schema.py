"""A replay store on a database without the schema (SQLite and PostgreSQL, ``empty_db_url``).

A URL is the store's own database: it is migrated to the newest revision. An engine is the
caller's: the store does not change its schema and says how to bring it up to date.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from learner.replay import ReplayStore
from learner.store.db import (
    SchemaNotAtHead,
    current_revisions,
    head_revisions,
    make_engine,
    upgrade,
)

MakeExamples = Callable[..., list[dict[str, str]]]  # fixture of conftest.py


def test_a_url_to_an_empty_database_gets_the_schema(
    empty_db_url: str, make_examples: MakeExamples
) -> None:
    with ReplayStore(empty_db_url, flush_interval=0.05) as store:
        ids = store.add("fresh", make_examples("fresh", 4))
        batch = store.sample(8)
    assert set(batch.ids.tolist()) <= set(ids)
    engine = make_engine(empty_db_url)
    assert current_revisions(engine) == head_revisions()
    engine.dispose()


@pytest.mark.parametrize("revision", [None, "0003"])
def test_an_engine_without_the_newest_schema_is_refused(
    empty_db_url: str, revision: str | None
) -> None:
    engine = make_engine(empty_db_url)
    if revision is not None:
        upgrade(engine, revision)
    with pytest.raises(SchemaNotAtHead) as caught:
        ReplayStore(engine)
    message = str(caught.value)
    assert "lifelong db upgrade" in message
    assert (revision or "none") in message
    # The caller's database is left as it was.
    assert current_revisions(engine) == frozenset({revision} if revision else ())
    engine.dispose()
