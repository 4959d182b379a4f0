"""The promotion rule: does a candidate beat the active version on the trained buckets?"""

from __future__ import annotations

from typing import Any

import numpy as np


def promotion_report(
    candidate: dict[str, float],
    reference: dict[str, float],
    reference_version: int | None,
    min_gain: float,
) -> dict[str, Any]:
    """Promote when the candidate's mean probe accuracy beats the reference's by min_gain."""
    ref_name = "base" if reference_version is None else f"v{reference_version}"
    report: dict[str, Any] = {
        "candidate": candidate,
        "reference": reference,
        "reference_version": reference_version,
        "min_gain": min_gain,
    }
    if not candidate:
        report.update(promote=False, reason="no probes in the trained buckets yet")
        return report
    cand_mean = float(np.mean(list(candidate.values())))
    ref_mean = float(np.mean([reference[b] for b in candidate]))
    gain = cand_mean - ref_mean
    promote = gain > min_gain
    verdict = "promoted" if promote else "kept as candidate"
    report.update(
        candidate_mean=cand_mean,
        reference_mean=ref_mean,
        gain=gain,
        promote=promote,
        reason=(
            f"{verdict}: mean probe accuracy {cand_mean:.3f} vs {ref_name} {ref_mean:.3f} "
            f"on {len(candidate)} trained bucket(s) (gain {gain:+.3f}, needs > {min_gain})"
        ),
    )
    return report
