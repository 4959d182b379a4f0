"""``ReplayStore``: prioritized replay over the train examples in SQL (DESIGN section 5).

SQL is the source of truth. At start-up the in-memory index (:mod:`learner.replay.sampler`)
is rebuilt from ``examples`` and ``replay_state``; train examples without a
``replay_state`` row are new and enter at the current maximum priority, and this entry
priority is written to SQL (write-behind, like every priority) so that a later rebuild
gives them the same priority even after the maximum has grown. Examples committed by
other processes are picked up at sample time once ``refresh_interval`` has passed, so
they are sampleable within ``refresh_interval`` (plus one query) of their commit. Priority
updates change the index at once and reach SQL through the write-behind
:class:`~learner.replay.writer.PriorityWriter`.

The store is meant for one learner process; its methods may be called from several
threads (a lock serialises them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sqlalchemy import Connection, Engine

from learner.replay import storage
from learner.replay.config import Batch, ReplayConfig, ReplayExample
from learner.replay.feed import ExampleFeed
from learner.replay.sampler import UNKNOWN, Draw, PrioritizedIndex
from learner.replay.sumtree import Floats, Ints
from learner.replay.texts import TextCache
from learner.replay.writer import PriorityWriter
from learner.store.db import make_engine, require_head, upgrade, write_transaction
from learner.store.ingest import IngestLimits, NewExample, content_hash, ingest_batch

# At start-up the first poll looks this many ids back: on PostgreSQL a batch with smaller
# ids can commit after the rebuild's read (see learner.replay.feed).
STARTUP_LOOKBACK_IDS = 10_000


class ReplayStore:
    """Prioritized experience replay over the train examples in SQL.

    ``ReplayStore(url_or_engine, config=None, **options)``: options are
    :class:`ReplayConfig` fields and override ``config``. A URL gets its own engine,
    disposed by :meth:`close`, and its schema is migrated to the newest revision (a new
    SQLite file or an empty database gets its tables). An engine stays the caller's and
    is not migrated: :class:`~learner.store.db.SchemaNotAtHead` when its schema is
    missing or old.
    """

    def __init__(
        self, url_or_engine: str | Engine, config: ReplayConfig | None = None, **options: Any
    ) -> None:
        if config is not None and not isinstance(config, ReplayConfig):
            raise TypeError("config must be a ReplayConfig; pass settings by keyword")
        self.config = replace(config or ReplayConfig(), **options)
        self._owns_engine = not isinstance(url_or_engine, Engine)
        if isinstance(url_or_engine, Engine):
            # The caller's engine may serve others: changing its schema is not ours to do.
            require_head(url_or_engine)
            self.engine: Engine = url_or_engine
        else:
            self.engine = _migrated_engine(url_or_engine)
        cfg = self.config
        self._index = PrioritizedIndex(cfg.alpha, cfg.block_size, cfg.max_per_bucket)
        self._feed = ExampleFeed(cfg.gap_timeout)
        self._rng = np.random.default_rng(cfg.seed)
        self._step = 0  # sample() calls so far: the beta schedule position
        self._names: dict[int, str] = {}
        self._excluded: set[int] = set()  # bucket ids kept out of the index
        self._texts = TextCache(cfg.text_cache_bytes)
        self._lock = threading.RLock()
        self._read_conn: Connection | None = None
        self._closed = False
        self._writer = PriorityWriter(self.engine, cfg.flush_interval, cfg.max_pending)
        try:
            self._rebuild()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- SQL reads

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A long-lived read connection; each use ends its transaction (fresh snapshot)."""
        if self._read_conn is None or self._read_conn.invalidated:
            conn = self.engine.connect()
            if conn.dialect.name == "postgresql":  # no BEGIN/ROLLBACK round trips
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            storage.tune_reader(conn)
            conn.rollback()
            self._read_conn = conn
        conn = self._read_conn
        try:
            yield conn
        except Exception:
            # Raw DBAPI errors bypass SQLAlchemy's disconnect detection: never reuse a
            # connection that failed; the next read opens a new one.
            self._read_conn = None
            conn.invalidate()
            raise
        conn.rollback()

    def _rebuild(self) -> None:
        with self._read() as conn:
            last_id = storage.max_example_id(conn)
            rows = storage.load_train(conn, last_id)
            self._names = storage.bucket_names(conn)
        self._index.insert(rows.ids, rows.bucket_ids, rows.priorities)
        self._fill_texts(last_id)
        if np.isnan(rows.priorities).any():  # new to every store: persist their entry
            self._writer.add_backfill(last_id, self._index.max_priority)
        self._feed.last_id = max(0, last_id - STARTUP_LOOKBACK_IDS)
        self._last_refresh = -float("inf")

    def _fill_texts(self, last_id: int) -> None:
        """Load the train examples' texts into the cache (until it is full)."""
        self._texts = TextCache(self.config.text_cache_bytes)
        if self._texts.full:
            return
        with self._read() as conn:
            for chunk in storage.iter_train_texts(conn, last_id):
                self._texts.put(*map(list, zip(*chunk, strict=True)))
                if self._texts.full:
                    break

    def refresh(self) -> int:
        """Index the train examples committed since the last refresh; returns how many."""
        with self._lock, self._read() as conn:
            rows = self._feed.poll(conn)
            if self._excluded:
                rows = rows.select(~np.isin(rows.bucket_ids, list(self._excluded)))
            if not set(np.unique(rows.bucket_ids).tolist()) <= self._names.keys():
                self._names = storage.bucket_names(conn)
            before = len(self._index)
            entered = self._index.insert(rows.ids, rows.bucket_ids, rows.priorities)
            self._writer.add_entries(entered, np.full(entered.size, self._index.max_priority))
            self._last_refresh = time.monotonic()
            return len(self._index) - before

    def refresh_if_due(self) -> int:
        """:meth:`refresh` when ``refresh_interval`` has passed since the last one.

        A learner calls this every tick, before it asks which buckets are trainable: an
        index refreshed only inside :meth:`sample` never learns of a first bucket."""
        with self._lock:
            if time.monotonic() - self._last_refresh >= self.config.refresh_interval:
                return self.refresh()
            return 0

    # ----------------------------------------------------------------- public API

    def add(
        self,
        bucket: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        kind: str | None = None,
        grader: str | None = None,
        client: str | None = None,
    ) -> list[int]:
        """Store examples (``prompt``, ``target``, optional ``id``) through ingestion.

        One transaction; duplicates are no-ops. Returns the id of every given example in
        order: duplicates get their existing id, probe examples their id too (they are
        stored but never sampled). The new train examples are sampleable on return.
        """
        new = [NewExample(ex["prompt"], ex["target"], _external_id(ex)) for ex in examples]
        limit = IngestLimits().max_examples
        options: dict[str, Any] = {"kind": kind, "grader": grader, "client": client}
        with self._lock:
            with write_transaction(self.engine) as conn:
                for start in range(0, max(len(new), 1), limit):  # one transaction for all
                    ingest_batch(conn, bucket, new[start : start + limit], **options)
                hashes = [content_hash(bucket, ex.prompt, ex.target) for ex in new]
                by_hash = storage.example_ids(conn, bucket, sorted(set(hashes)))
            self.refresh()
        return [by_hash[h] for h in hashes]

    def sample(
        self,
        batch_size: int,
        bucket: str | None = None,
        beta: float | None = None,
        *,
        with_examples: bool = True,
    ) -> Batch:
        """Draw ``batch_size`` train examples by priority (with replacement).

        ``bucket``: only that bucket; otherwise across buckets with the quota. ``beta``:
        the importance-weight exponent, by default annealed from ``config.beta`` to 1 over
        ``config.beta_steps`` calls. Weights are ``(N * P(i)) ** -beta / max`` over the
        batch, with P(i) the probability of the distribution actually drawn from.
        ``with_examples=False`` skips reading the texts from SQL (``examples`` is empty).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        with self._lock:
            self.refresh_if_due()
            key = None if bucket is None else self._bucket_key(bucket)
            beta = self.beta if beta is None else float(beta)
            draw, examples = self._draw(batch_size, key, with_examples)
            self._step += 1
        weights = (draw.population * draw.probabilities) ** -beta
        weights /= weights.max()
        return Batch(draw.ids, weights.astype(np.float32), examples, draw.probabilities, beta)

    def sample_uniform(self, batch_size: int, buckets: Sequence[str]) -> Batch:
        """Draw ``batch_size`` train examples uniformly over ``buckets`` together (with
        replacement, priorities ignored; weights 1). See ``PrioritizedIndex.draw_uniform``."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        with self._lock:
            self.refresh_if_due()
            keys = [self._bucket_key(name) for name in buckets]
            draw, examples = self._draw(
                batch_size,
                None,
                True,
                lambda: self._index.draw_uniform(self._rng, batch_size, keys),
            )
        weights = np.ones(len(draw.ids), dtype=np.float32)
        return Batch(draw.ids, weights, examples, draw.probabilities, 0.0)

    def _draw(
        self,
        batch_size: int,
        key: int | None,
        with_examples: bool,
        draw_ids: Callable[[], Draw] | None = None,
    ) -> tuple[Draw, list[ReplayExample]]:
        """Draw ids (by priority, or with ``draw_ids``) and read their texts."""
        for _ in range(3):  # an example deleted from SQL meanwhile is dropped, then redrawn
            if draw_ids is None:
                draw = self._index.draw(self._rng, batch_size, key, self.config.quota)
            else:
                draw = draw_ids()
            if not with_examples:
                return draw, []
            texts, misses = self._texts.get(draw.ids)
            if misses.size:
                missing = self._read_texts(misses, draw.ids, texts)
                if missing:
                    self._index.remove(np.array(missing, dtype=np.int64))
                    continue
            names, make = self._names, ReplayExample._make
            return draw, [make((names[t[0]], t[1], t[2])) for t in texts if t is not None]
        raise RuntimeError("sampled examples keep disappearing from SQL")

    def _read_texts(
        self, misses: Ints, ids: Ints, texts: list[tuple[int, str, str] | None]
    ) -> list[int]:
        """Fill ``texts`` from SQL where the cache had nothing (and cache them); returns
        the ids that SQL does not have either (deleted)."""
        wanted = np.unique(misses).tolist()
        with self._read() as conn:
            found = storage.fetch_texts(conn, wanted)
            if not {row[0] for row in found.values()} <= self._names.keys():
                self._names = storage.bucket_names(conn)
        rows = [(i, *found[i]) for i in wanted if i in found]
        if rows:
            self._texts.put(*map(list, zip(*rows, strict=True)))
        for position, example_id in enumerate(ids.tolist()):
            if texts[position] is None and example_id in found:
                texts[position] = found[example_id]
        return [i for i in wanted if i not in found]

    def exclude_bucket(self, name: str) -> int:
        """Keep a bucket's examples out of every draw from now on (also of examples that
        arrive later); returns how many left the index. Not part of ``state_dict``: the
        owner re-applies its exclusions after a restart."""
        with self._lock:
            keys = [k for k, n in self._names.items() if n == name]
            if not keys:
                with self._read() as conn:
                    self._names = storage.bucket_names(conn)
                keys = [k for k, n in self._names.items() if n == name]
            if not keys or keys[0] in self._excluded:
                return 0
            self._excluded.add(keys[0])
            with self._read() as conn:
                ids = storage.bucket_train_ids(conn, keys[0])
            before = len(self._index)
            self._index.remove(ids)
            return before - len(self._index)

    def include_bucket(self, name: str) -> int:
        """Undo :meth:`exclude_bucket`: the bucket's train examples re-enter the index with
        their stored priorities; returns how many entered."""
        with self._lock:
            keys = [k for k, n in self._names.items() if n == name and k in self._excluded]
            if not keys:
                return 0
            self._excluded.discard(keys[0])
            with self._read() as conn:
                rows = storage.fetch_ids(conn, storage.bucket_train_ids(conn, keys[0]))
            before = len(self._index)
            self._index.readmit(rows.ids, rows.bucket_ids, rows.priorities)
            return len(self._index) - before

    def update_priorities(self, ids: ArrayLike, priorities: ArrayLike) -> None:
        """Set priorities after a step: ``priority = value + eps`` (values: per-example
        losses, finite and >= 0). Also records ``last_loss = value``, counts
        ``times_sampled`` and sets ``last_sampled_step`` to the sample-call count. Ids
        that left the index (evicted) are still written to SQL."""
        # Copies: the writer keeps them until the next flush, the caller may reuse its own.
        ids = np.array(ids, dtype=np.int64)
        values = np.array(priorities, dtype=np.float64)
        if ids.ndim != 1 or ids.shape != values.shape:
            raise ValueError("ids and priorities must be 1-d and of the same length")
        if values.size and not (values.min() >= 0 and values.max() < np.inf):
            raise ValueError("priorities must be finite and >= 0")
        with self._lock:
            slots = self._index.locate(ids) if ids.size and ids.min() >= 0 else None
            if slots is None or (slots == UNKNOWN).any():
                raise KeyError("update_priorities: ids that are not train examples of this store")
            prio = values + self.config.eps
            self._index.update(ids, prio, slots)
            self._writer.add_updates(ids, prio, values, self._step)

    def flush(self) -> int:
        """Write all pending priority updates to SQL now; returns the rows written."""
        return self._writer.flush()

    def __len__(self) -> int:
        """Train examples in the index (evicted ones excluded)."""
        return len(self._index)

    @property
    def beta(self) -> float:
        """The annealed beta of the next sample call."""
        b0 = self.config.beta
        return b0 + (1.0 - b0) * min(1.0, self._step / self.config.beta_steps)

    def text_cache_stats(self) -> dict[str, int | bool]:
        """How many examples' texts the cache holds, its bytes, and whether it is full
        (draws of ids it lacks read their texts from SQL)."""
        with self._lock:
            texts = self._texts
            return {"examples": len(texts), "bytes": texts.nbytes, "full": texts.full}

    @property
    def index_nbytes(self) -> int:
        """Memory of the in-memory index (its numpy arrays)."""
        return self._index.nbytes()

    def bucket_sizes(self) -> dict[str, int]:
        """Examples in the index per bucket name."""
        return {self._names[k]: n for k, n in self._index.bucket_sizes().items()}

    def probabilities(self, batch_size: int, bucket: str | None = None) -> tuple[Ints, Floats]:
        """Every indexed id (ascending) with its P(i) for one draw of ``sample(batch_size,
        bucket)``: the exact distribution, for tests and diagnostics."""
        with self._lock:
            key = None if bucket is None else self._bucket_key(bucket)
            return self._index.probabilities(batch_size, key, self.config.quota)

    def _bucket_key(self, name: str) -> int:
        for attempt in range(2):
            keys = [k for k, n in self._names.items() if n == name]
            if keys and keys[0] in self._index.bucket_sizes():
                return keys[0]
            if attempt == 0:
                self.refresh()  # perhaps created by another process a moment ago
        raise ValueError(f"bucket {name!r} has no train examples in the replay store")

    def close(self) -> None:
        """Flush pending updates, stop the writer and release connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.close()
            finally:
                if self._read_conn is not None:
                    self._read_conn.close()
                if self._owns_engine:
                    self.engine.dispose()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """RNG state, beta schedule position, last seen example id and maximum priority.

        The index itself is not included: it is rebuilt from SQL.
        """
        return {
            "rng": self._rng.bit_generator.state,
            "step": self._step,
            "last_id": self._feed.last_id,
            "index": self._index.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore RNG, step and maximum priority. ``last_id`` is not moved: this store's
        index was rebuilt from SQL, which already covers every example up to it."""
        with self._lock:
            self._rng.bit_generator.state = state["rng"]
            self._step = int(state["step"])
            self._index.load_state_dict(state["index"])


def _migrated_engine(url: str) -> Engine:
    """An engine on ``url`` with the schema at the newest revision."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _external_id(example: Mapping[str, Any]) -> str | None:
    value = example.get("id")
    return None if value is None else str(value)
