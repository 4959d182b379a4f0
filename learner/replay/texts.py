"""``TextCache``: the prompt and target texts of indexed examples, held in memory.

Without it every sampled batch reads its texts from SQL: at a million examples that was
about three quarters of a ``sample(256)`` call (1.2 ms of 1.5 ms on SQLite, see
bench/results/replay.md), four times the whole round of cpprb's in-memory buffer. The
texts are kept compactly: UTF-8 bytes appended to one buffer, and per example id (ids are
dense: they come from the table's sequence) its offset, the byte lengths of prompt and
target, and its bucket id, in numpy arrays indexed by id. That is the texts' own size plus
20 bytes per id, against roughly 150 bytes of Python object overhead per example for a
dict of strings.

The cache is bounded by ``max_bytes``: once full it takes no more examples, and ids it
does not hold are read from SQL as before. It is a cache, not state: rebuilt with the
index, never checkpointed. Examples are never changed once stored (a changed example is
a new row); an example deleted from SQL behind the store's back stays drawable from the
cache until the store is rebuilt, which the service never needs (it archives buckets and
keeps their rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from learner.replay.sumtree import Ints

PER_ID_BYTES = 8 + 4 + 4 + 4  # offset, prompt length, target length, bucket id
ABSENT = -1


class TextCache:
    """Texts of examples by id, in one byte buffer; bounded by ``max_bytes`` (0: off)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._offset = np.full(0, ABSENT, dtype=np.int64)  # [max id + 1]
        self._prompt_len = np.zeros(0, dtype=np.int32)
        self._target_len = np.zeros(0, dtype=np.int32)
        self._bucket = np.zeros(0, dtype=np.int32)
        self.full = max_bytes == 0

    def __len__(self) -> int:
        return int((self._offset >= 0).sum())

    @property
    def nbytes(self) -> int:
        """Bytes held: the text buffer and the per-id arrays."""
        return len(self._buffer) + self._offset.size * PER_ID_BYTES

    def put(
        self, ids: Sequence[int], bucket_ids: Sequence[int], prompts: Sequence[str],
        targets: Sequence[str],
    ) -> int:  # fmt: skip
        """Keep the texts of these examples; returns how many were taken (none once full)."""
        if self.full or not ids:
            return 0
        self._grow(max(ids))
        taken = 0
        for example_id, bucket_id, prompt, target in zip(
            ids, bucket_ids, prompts, targets, strict=True
        ):
            if self._offset[example_id] != ABSENT:
                continue
            p, t = prompt.encode(), target.encode()
            if self.nbytes + len(p) + len(t) > self.max_bytes:
                self.full = True  # later examples are read from SQL
                break
            self._offset[example_id] = len(self._buffer)
            self._prompt_len[example_id], self._target_len[example_id] = len(p), len(t)
            self._bucket[example_id] = bucket_id
            self._buffer += p
            self._buffer += t
            taken += 1
        return taken

    def get(self, ids: Ints) -> tuple[list[tuple[int, str, str] | None], Ints]:
        """``(bucket id, prompt, target)`` per id (None where not held), and the ids not
        held (to read from SQL)."""
        inside = ids < self._offset.size
        offsets = np.full(ids.size, ABSENT, dtype=np.int64)
        offsets[inside] = self._offset[ids[inside]]
        held = offsets >= 0
        out: list[tuple[int, str, str] | None] = [None] * ids.size
        buffer = self._buffer
        # One pass of plain ints: numpy scalars in slices cost more than the decoding.
        rows = zip(
            np.flatnonzero(held).tolist(),
            offsets[held].tolist(),
            self._prompt_len[ids[held]].tolist(),
            self._target_len[ids[held]].tolist(),
            self._bucket[ids[held]].tolist(),
            strict=True,
        )
        for i, start, p_len, t_len, bucket in rows:
            middle = start + p_len
            out[i] = (
                bucket,
                buffer[start:middle].decode(),
                buffer[middle : middle + t_len].decode(),
            )
        return out, ids[~held]

    def _grow(self, max_id: int) -> None:
        size = self._offset.size
        if max_id < size:
            return
        new = max(max_id + 1, 2 * size, 1024)
        self._offset = np.concatenate([self._offset, np.full(new - size, ABSENT, np.int64)])
        grow = new - size
        self._prompt_len = np.concatenate([self._prompt_len, np.zeros(grow, np.int32)])
        self._target_len = np.concatenate([self._target_len, np.zeros(grow, np.int32)])
        self._bucket = np.concatenate([self._bucket, np.zeros(grow, np.int32)])
