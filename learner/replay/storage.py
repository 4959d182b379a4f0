"""SQL access of the replay store: thin functions over a caller's connection.

The caller owns the transaction (``learner.store.db.write_transaction`` for writes).
Statements are written per dialect where it pays: lists of ids travel as one parameter
(a JSON array read with ``json_each`` on SQLite, an array with ``= ANY`` on PostgreSQL)
so the statement text is constant and prepared once, and bulk writes use ``executemany``
(SQLite) or ``unnest`` over arrays (PostgreSQL). Missing priorities come back as NaN.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import Connection

from learner.replay.sumtree import Floats, Ints

FETCH_CHUNK = 100_000  # rows per fetchmany when loading the index
MMAP_BYTES = 1 << 31  # SQLite mmap_size of the read connection (builds cap it near 2 GiB)


@dataclass(frozen=True)
class ExampleRows:
    """Rows of ``examples`` (left-joined with ``replay_state``) as arrays ``[m]``."""

    ids: Ints
    bucket_ids: Ints
    train: np.ndarray  # bool: split == 'train'
    priorities: Floats  # NaN where replay_state has no row

    @classmethod
    def empty(cls) -> ExampleRows:
        i, f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return cls(i, i, np.empty(0, dtype=bool), f)

    @classmethod
    def concat(cls, parts: list[ExampleRows]) -> ExampleRows:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        columns = zip(*((p.ids, p.bucket_ids, p.train, p.priorities) for p in parts), strict=True)
        return cls(*(np.concatenate(col) for col in columns))

    def select(self, mask: np.ndarray) -> ExampleRows:
        return ExampleRows(
            self.ids[mask], self.bucket_ids[mask], self.train[mask], self.priorities[mask]
        )


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


@contextmanager
def _cursor(conn: Connection) -> Iterator[Any]:
    """The DBAPI cursor of ``conn``, inside its transaction if one is open.

    The hot and the bulk reads use it directly: SQLAlchemy's statement and row handling
    costs more than the query itself for a batch's texts (about 0.15 ms) and doubles the
    time to load a million rows.
    """
    cursor = conn.connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def _rows_sql(where: str) -> str:
    # Priorities are > 0, so -1 stands for "no replay_state row" (NaN after loading).
    return (
        "SELECT e.id, e.bucket_id, CASE WHEN e.split = 'train' THEN 1 ELSE 0 END, "
        "COALESCE(r.priority, -1.0) FROM examples e "
        f"LEFT JOIN replay_state r ON r.example_id = e.id WHERE {where} ORDER BY e.id"
    )


def _ids_in(conn: Connection) -> str:
    """``e.id IN <one parameter holding a list of ids>``, see :func:`_ids_param`."""
    if _pg(conn):
        return "e.id = ANY(%s::bigint[])"
    return "e.id IN (SELECT value FROM json_each(?))"


def _ids_param(conn: Connection, ids: list[int]) -> tuple[str]:
    # An array literal is dumped faster than a list of ints by psycopg.
    return ("{" + ",".join(map(str, ids)) + "}",) if _pg(conn) else (json.dumps(ids),)


def _to_rows(rows: list[tuple[int, int, int, float]]) -> ExampleRows:
    # fromiter over the flattened tuples is about 3x faster than np.array(rows).
    flat = np.fromiter(chain.from_iterable(rows), np.float64, count=4 * len(rows))
    data = flat.reshape(-1, 4)
    priorities = data[:, 3].copy()
    priorities[priorities < 0] = np.nan
    ids, buckets = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64)
    return ExampleRows(ids, buckets, data[:, 2] > 0, priorities)


def _fetch(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> ExampleRows:
    parts = []
    with _cursor(conn) as cursor:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(FETCH_CHUNK):
            parts.append(_to_rows(chunk))
    return ExampleRows.concat(parts)


def max_example_id(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM examples").scalar_one())


def load_train(conn: Connection, up_to_id: int) -> ExampleRows:
    """Every train example with ``id <= up_to_id``, in id order (the index rebuild)."""
    where = f"e.split = 'train' AND e.id <= {int(up_to_id)}"
    return _fetch(conn, _rows_sql(where))


def fetch_after(conn: Connection, after_id: int) -> ExampleRows:
    """Examples of every split with ``id > after_id`` (the split tells gaps from probes)."""
    return _fetch(conn, _rows_sql(f"e.id > {int(after_id)}"))


def fetch_ids(conn: Connection, ids: Ints) -> ExampleRows:
    """The examples among ``ids`` that exist (to re-check ids seen as gaps)."""
    if ids.size == 0:
        return ExampleRows.empty()
    return _fetch(conn, _rows_sql(_ids_in(conn)), _ids_param(conn, ids.tolist()))


def fetch_texts(conn: Connection, ids: list[int]) -> dict[int, tuple[int, str, str]]:
    """``{id: (bucket id, prompt, target)}`` for the ids that exist."""
    sql = f"SELECT e.id, e.bucket_id, e.prompt, e.target FROM examples e WHERE {_ids_in(conn)}"
    with _cursor(conn) as cursor:
        cursor.execute(sql, _ids_param(conn, ids))
        return {row[0]: row[1:] for row in cursor.fetchall()}


def iter_train_texts(conn: Connection, up_to_id: int) -> Iterator[list[tuple[int, int, str, str]]]:
    """Every train example's ``(id, bucket id, prompt, target)`` with ``id <= up_to_id``,
    in chunks of ``FETCH_CHUNK`` rows (the text cache's fill at a rebuild)."""
    sql = (
        "SELECT e.id, e.bucket_id, e.prompt, e.target FROM examples e "
        f"WHERE e.split = 'train' AND e.id <= {int(up_to_id)} ORDER BY e.id"
    )
    with _cursor(conn) as cursor:
        cursor.execute(sql)
        while chunk := cursor.fetchmany(FETCH_CHUNK):
            yield chunk


def tune_reader(conn: Connection) -> None:
    """Settings of the sampler's long-lived read connection.

    SQLite: memory-map the database file (address space, not memory), which saves a
    system call per page read: fetching a batch's texts takes about 40% less at a million
    examples.
    """
    if not _pg(conn):
        conn.exec_driver_sql(f"PRAGMA mmap_size={MMAP_BYTES}")


def bucket_names(conn: Connection) -> dict[int, str]:
    return {row[0]: row[1] for row in conn.exec_driver_sql("SELECT id, name FROM buckets")}


def bucket_train_ids(conn: Connection, bucket_id: int) -> Ints:
    """Ids of a bucket's train examples."""
    rows = conn.exec_driver_sql(
        "SELECT id FROM examples WHERE bucket_id = %s AND split = 'train'"
        if _pg(conn)
        else "SELECT id FROM examples WHERE bucket_id = ? AND split = 'train'",
        (bucket_id,),
    ).all()
    return np.array([r[0] for r in rows], dtype=np.int64)


def backfill_entries(conn: Connection, priority: float, after_id: int, up_to_id: int) -> int:
    """Entry rows at ``priority`` for the train examples with ids in ``(after_id,
    up_to_id]`` that have no replay_state row (see ``ReplayStore``); returns how many."""
    value = "%(p)s" if _pg(conn) else "?"
    sql = (
        "INSERT INTO replay_state (example_id, priority, times_sampled) "
        f"SELECT e.id, {value}, 0 FROM examples e WHERE e.split = 'train' "
        f"AND e.id > {int(after_id)} AND e.id <= {int(up_to_id)} AND NOT EXISTS "
        "(SELECT 1 FROM replay_state r WHERE r.example_id = e.id) "
        "ON CONFLICT (example_id) DO NOTHING"
    )
    params = {"p": float(priority)} if _pg(conn) else (float(priority),)
    return int(conn.exec_driver_sql(sql, params).rowcount)


_COLUMNS = "example_id, priority, last_loss, times_sampled, last_sampled_step"
_ON_CONFLICT_UPDATE = (
    "ON CONFLICT (example_id) DO UPDATE SET priority = excluded.priority, "
    "last_loss = excluded.last_loss, "
    "times_sampled = replay_state.times_sampled + excluded.times_sampled, "
    "last_sampled_step = excluded.last_sampled_step"
)
_PG_UNNEST = (
    "FROM unnest(%(ids)s::bigint[], %(p)s::float8[], %(loss)s::float8[], %(n)s::int[], "
    "%(step)s::int[]) AS u(id, p, loss, n, step) JOIN examples e ON e.id = u.id"
)


def insert_entries(conn: Connection, ids: Ints, priorities: Floats) -> None:
    """Entry rows (priority, never sampled) for new examples; existing rows are kept.

    Rows of examples deleted meanwhile are skipped rather than failing the batch.
    """
    if ids.size == 0:
        return
    zeros = np.zeros(ids.size, dtype=np.int64)
    if _pg(conn):
        params = _pg_arrays(ids, priorities, np.full(ids.size, np.nan), zeros, zeros)
        sql = f"INSERT INTO replay_state ({_COLUMNS}) SELECT u.id, u.p, NULL, 0, NULL "
        conn.exec_driver_sql(f"{sql}{_PG_UNNEST} ON CONFLICT (example_id) DO NOTHING", params)
        return
    sql = (
        f"INSERT INTO replay_state ({_COLUMNS}) SELECT ?1, ?2, NULL, 0, NULL "
        "WHERE EXISTS (SELECT 1 FROM examples WHERE id = ?1) ON CONFLICT (example_id) DO NOTHING"
    )
    conn.exec_driver_sql(sql, list(zip(ids.tolist(), priorities.tolist(), strict=True)))


def upsert_updates(
    conn: Connection, ids: Ints, priorities: Floats, losses: Floats, counts: Ints, steps: Ints
) -> None:
    """Write priority updates: ``times_sampled`` grows by ``counts``, the rest is replaced."""
    if ids.size == 0:
        return
    if _pg(conn):
        params = _pg_arrays(ids, priorities, losses, counts, steps)
        sql = f"INSERT INTO replay_state ({_COLUMNS}) SELECT u.id, u.p, u.loss, u.n, u.step "
        conn.exec_driver_sql(f"{sql}{_PG_UNNEST} {_ON_CONFLICT_UPDATE}", params)
        return
    sql = (
        f"INSERT INTO replay_state ({_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5 "
        f"WHERE EXISTS (SELECT 1 FROM examples WHERE id = ?1) {_ON_CONFLICT_UPDATE}"
    )
    rows = zip(
        ids.tolist(),
        priorities.tolist(),
        losses.tolist(),
        counts.tolist(),
        steps.tolist(),
        strict=True,
    )
    conn.exec_driver_sql(sql, list(rows))


def _pg_arrays(
    ids: Ints, priorities: Floats, losses: Floats, counts: Ints, steps: Ints
) -> dict[str, list[int] | list[float]]:
    return {
        "ids": ids.tolist(),
        "p": priorities.tolist(),
        "loss": losses.tolist(),
        "n": counts.tolist(),
        "step": steps.tolist(),
    }


def example_ids(conn: Connection, bucket: str, hashes: list[str]) -> dict[str, int]:
    """``{content_hash: id}`` of a bucket's examples among ``hashes``."""
    params: dict[str, object] | tuple[str, str]
    if _pg(conn):
        where = "e.content_hash = ANY(%(hashes)s) AND b.name = %(bucket)s"
        params = {"hashes": hashes, "bucket": bucket}
    else:
        where = "e.content_hash IN (SELECT value FROM json_each(?)) AND b.name = ?"
        params = (json.dumps(hashes), bucket)
    sql = (
        "SELECT e.content_hash, e.id FROM examples e JOIN buckets b ON b.id = e.bucket_id "
        f"WHERE {where}"
    )
    return {row[0]: row[1] for row in conn.exec_driver_sql(sql, params)}
