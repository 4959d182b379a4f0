"""The accuracy matrix R[version, bucket] and its per-version metrics, read from SQL.

Every cell is derived from the per-probe rows (``probe_results``); the metrics follow the
version's lineage (its parent chain down to the base model): average accuracy, backward
transfer, forgetting, and the negative flip rate against the active version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from learner.evaluation.measures import lineage_of, negative_flip_rate, version_metrics
from learner.model import registry
from learner.store.evaluations import matrix_cells, version_correct

Model = int | None


def _row(
    version: Model,
    cells: dict[Model, dict[str, tuple[float, int]]],
    parents: dict[int, int | None],
    active_answers: dict[int, bool] | None,
    conn: Connection,
) -> dict[str, Any]:
    matrix = {v: {b: acc for b, (acc, _) in by_bucket.items()} for v, by_bucket in cells.items()}
    metrics = version_metrics(matrix, lineage_of(version, parents))
    nfr = None
    if active_answers is not None:
        rate, lost, n = negative_flip_rate(active_answers, version_correct(conn, version))
        nfr = {"rate": rate, "lost": lost, "probes": n} if n else None
    mine = cells.get(version, {})
    return {
        "version": version,
        "model": "base" if version is None else f"lifelong@{version}",
        "parent_version": None if version is None else parents.get(version),
        "accuracy": {b: acc for b, (acc, _) in sorted(mine.items())},
        "probes": {b: n for b, (_, n) in sorted(mine.items())},
        **metrics.to_dict(),
        "negative_flip_rate": nfr,
    }


def matrix_report(conn: Connection) -> dict[str, Any]:
    """The whole matrix: every evaluated model (base first) with its metrics."""
    cells = matrix_cells(conn)
    parents = registry.parents(conn)
    active = registry.active_version(conn)
    active_answers = version_correct(conn, active)
    statuses = {v.version: (v.status, v.train_step) for v in registry.list_versions(conn)}
    rows = []
    for version in sorted(cells, key=lambda v: -1 if v is None else v):
        row = _row(version, cells, parents, active_answers if version != active else None, conn)
        status, step = statuses.get(version, ("base", 0)) if version is not None else ("base", 0)
        rows.append({**row, "status": status, "train_step": step, "active": version == active})
    buckets = sorted({b for by_bucket in cells.values() for b in by_bucket})
    return {"active_version": active, "buckets": buckets, "versions": rows}


def version_report(conn: Connection, version: int) -> dict[str, Any] | None:
    """One version's row of the matrix (None when it was never evaluated)."""
    cells = matrix_cells(conn)
    if version not in cells:
        return None
    active = registry.active_version(conn)
    active_answers = version_correct(conn, active) if active != version else None
    return _row(version, cells, registry.parents(conn), active_answers, conn)
