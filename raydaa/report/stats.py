"""Spearman rank correlation with numpy alone: written before scipy became a dependency
(for the paired tests, raydaa.report.paired) and kept; it gives scipy.stats.spearmanr's ρ
(average ranks for ties) and its own NaN rules below."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span (scipy's 'average')."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1, dtype=float)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, int]:
    """(ρ, n): Pearson correlation of the ranks over the pairs where both are finite.

    ρ is NaN when fewer than 3 pairs remain or either side is constant (no ranking to
    correlate); n is the number of pairs used.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"spearman: x and y must be 1-D of the same length, got {x.shape}, {y.shape}"
        )
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        return math.nan, n
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    if denominator == 0.0:
        return math.nan, n
    return float((rx * ry).sum() / denominator), n
