"""Length-grouped micro-batches: one training step's rows split by length, so that short
rows are not padded to the longest one.

A batch mixes short task examples with long alignment anchors; padded to one width, a
CPU step computes the padding too. Splitting the batch (sorted by length) into a few
micro-batches and accumulating their gradients gives the same step (the loss is a sum
over rows divided by the batch size, whatever the grouping) for fewer computed tokens.
Each extra micro-batch costs a forward/backward call of its own, so a split is made only
where the padding it saves outweighs that.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_groups(lengths: Sequence[int], max_groups: int, overhead: int) -> list[list[int]]:
    """Row indices split into at most ``max_groups`` groups of similar length.

    Minimises ``sum over groups (rows x longest row + overhead)``: the tokens computed with
    padding, plus ``overhead`` token-equivalents per forward/backward call. Exact, by
    dynamic programming over the rows sorted by length (contiguous runs of the sorted order
    are optimal for this cost): O(max_groups x B^2) for a batch of B rows.
    """
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: lengths[i])
    ordered = [lengths[i] for i in order]
    inf = float("inf")
    # best[k][j]: least cost of the first j sorted rows in exactly k groups; cut[k][j]:
    # where the last of those groups starts.
    best = [[inf] * (n + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0.0
    for k in range(1, max_groups + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                cost = best[k - 1][i] + (j - i) * ordered[j - 1] + overhead
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    k = min(range(1, max_groups + 1), key=lambda g: best[g][n])
    groups, j = [], n
    while k > 0:
        i = cut[k][j]
        groups.append(order[i:j])
        j, k = i, k - 1
    return groups[::-1]
