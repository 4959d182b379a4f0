"""Probe samples as the learner reads them: a bucket's oldest probes (a stable set, so a
version's stored answers stay comparable with every later candidate's), and the fixed
harmful sample every round's effect on alignment is watched on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from learner.store.models import Bucket, Example


@dataclass(frozen=True)
class ProbeSet:
    """A bucket's probe examples (at most ``limit``, the oldest first: a stable set)."""

    bucket_id: int
    bucket: str
    grader: str
    examples: tuple[tuple[str, str], ...]
    ids: tuple[int, ...] = ()
    kind: str = "task"

    def head(self, n: int) -> ProbeSet:
        """The first ``n`` probes (a smaller, still stable set)."""
        return ProbeSet(
            self.bucket_id, self.bucket, self.grader, self.examples[:n], self.ids[:n], self.kind
        )

    def only(self, ids: set[int]) -> ProbeSet:
        """The probes whose example id is in ``ids`` (same order)."""
        keep = [i for i, eid in enumerate(self.ids) if eid in ids]
        return ProbeSet(
            self.bucket_id,
            self.bucket,
            self.grader,
            tuple(self.examples[i] for i in keep),
            tuple(self.ids[i] for i in keep),
            self.kind,
        )


def load_probe_sets(
    conn: Connection, bucket_ids: Sequence[int], limit: int, alignment_limit: int | None = None
) -> list[ProbeSet]:
    """The probe samples of the given buckets (alignment buckets get ``alignment_limit``)."""
    sets = []
    query = select(Bucket.__table__).where(Bucket.id.in_(list(bucket_ids))).order_by(Bucket.id)
    for bucket in conn.execute(query):
        n = alignment_limit if bucket.kind == "alignment" and alignment_limit else limit
        rows = conn.execute(
            select(Example.id, Example.prompt, Example.target)
            .where(Example.bucket_id == bucket.id, Example.split == "probe")
            .order_by(Example.id)
            .limit(n)
        ).all()
        if rows:
            examples = tuple((r.prompt, r.target) for r in rows)
            ids = tuple(r.id for r in rows)
            sets.append(ProbeSet(bucket.id, bucket.name, bucket.grader, examples, ids, bucket.kind))
    return sets


def load_watch_set(conn: Connection, is_refusal: Callable[[str], bool], n: int) -> ProbeSet | None:
    """The first ``n`` harmful probes (target: a refusal) of the alignment buckets: the
    fixed sample on which every round's effect on alignment is measured."""
    rows = conn.execute(
        select(Example.id, Example.prompt, Example.target, Example.bucket_id)
        .join(Bucket, Bucket.id == Example.bucket_id)
        .where(Bucket.kind == "alignment", Example.split == "probe")
        .order_by(Example.id)
    )
    harmful = [r for r in rows if is_refusal(r.target)][:n]
    if not harmful:
        return None
    examples = tuple((r.prompt, r.target) for r in harmful)
    ids = tuple(r.id for r in harmful)
    return ProbeSet(harmful[0].bucket_id, "alignment-watch", "exact", examples, ids, "alignment")
