"""The knapsack selector (as in HALP): choose how many groups to take from each dimension so
that the latency saved reaches a quota while the importance removed is smallest.

A multiple-choice knapsack solved by dynamic programming over the saving, discretised
into ``bins`` steps of ``quota / bins``. Savings of different dimensions are treated as
additive (a conv shared by two dimensions makes this approximate); the pruner re-reads
the LUT after every removal, so the error does not accumulate.
"""

from __future__ import annotations

import numpy as np


def min_cost_cover(costs: list[np.ndarray], savings: list[np.ndarray], quota: float,
                   bins: int = 200) -> list[int]:
    """For each dimension j, how many groups ``n_j`` to remove (option n costs ``costs[j][n-1]``
    and saves ``savings[j][n-1]``, both cumulative) so that the total saving reaches ``quota``
    at the least total cost. If the quota cannot be reached, the largest saving is taken."""
    if quota <= 0:
        return [0] * len(costs)
    # Fine enough that the smallest saving counts and rounding loses little per dimension.
    smallest = min((float(v) for s in savings for v in s if np.isfinite(v) and v > 0),
                   default=quota)
    bins = int(min(20_000, max(bins, 4 * len(costs) * quota / smallest)))
    unit = quota / bins
    inf = np.inf
    best = np.full(bins + 1, inf)  # best[b]: least cost for a saving of at least b units
    best[0] = 0.0
    choice = []
    for c, s in zip(costs, savings):
        new, pick = best.copy(), np.zeros(bins + 1, dtype=int)
        for n, (cn, sn) in enumerate(zip(c, s), start=1):
            if not (np.isfinite(cn) and np.isfinite(sn)) or sn <= 0:
                continue
            gain = int(min(bins, np.floor(sn / unit + 1e-9)))
            cand = best + cn
            # Saving b -> min(bins, b + gain): a shift, with everything past the end in bin `bins`.
            shifted = np.full(bins + 1, inf)
            source = np.full(bins + 1, -1)
            shifted[gain:bins] = cand[:bins - gain]
            source[gain:bins] = np.arange(bins - gain)
            tail = bins - gain + int(np.argmin(cand[bins - gain:]))
            shifted[bins], source[bins] = cand[tail], tail
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = n * (bins + 1) + source[better] + 1
        choice.append(pick)
        best = new
    target = bins if np.isfinite(best[bins]) else int(np.max(np.flatnonzero(np.isfinite(best))))
    counts = [0] * len(costs)
    for j in range(len(costs) - 1, -1, -1):
        p = choice[j][target]
        if p:
            counts[j], target = divmod(p - 1, bins + 1)
    return counts


__all__ = ["min_cost_cover"]
