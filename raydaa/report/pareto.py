"""The exact non-dominated set of (quality ↑, KL ↓) points, and the area it dominates.

A point is dominated when another point has quality >= and KL <= with at least one of the
two strict. Consequences, all deliberate:

- identical points do not dominate each other (neither is strictly better), so duplicates
  all stay on the front: two trials that land on the same (quality, KL) both reached it;
- a point with non-finite quality or KL (a failed or diverged trial, or an evaluation that
  produced NaN) is never on the front and never dominates anything;
- the empty set has an empty front; a single finite point is its own front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_BLOCK = 1024
"""Rows compared at once: bounds the pairwise comparison's memory to BLOCK x n booleans."""


def pareto_mask(quality: Sequence[float], kl: Sequence[float]) -> np.ndarray:
    """Boolean mask, True where the point is on the (quality max, KL min) front.

    quality, kl: (n,) numbers, one per point; the mask is (n,) and keeps their order.
    Exact, O(n²) comparisons done in blocks (sweeps hold hundreds of points, not millions).
    """
    q = np.asarray(quality, dtype=float)
    k = np.asarray(kl, dtype=float)
    if q.ndim != 1 or q.shape != k.shape:
        raise ValueError(
            f"pareto_mask: quality and kl must be 1-D of the same length, got shapes "
            f"{q.shape} and {k.shape}"
        )
    valid = np.flatnonzero(np.isfinite(q) & np.isfinite(k))
    qv, kv = q[valid], k[valid]
    dominated = np.zeros(len(valid), dtype=bool)
    for start in range(0, len(valid), _BLOCK):
        qi = qv[start : start + _BLOCK, None]  # (b, 1): the points being tested
        ki = kv[start : start + _BLOCK, None]
        # [i, j]: point j is at least as good as i on both axes and strictly better on one
        no_worse = (qv[None, :] >= qi) & (kv[None, :] <= ki)
        better = (qv[None, :] > qi) | (kv[None, :] < ki)
        dominated[start : start + _BLOCK] = (no_worse & better).any(axis=1)
    mask = np.zeros(len(q), dtype=bool)
    mask[valid[~dominated]] = True
    return mask


def pareto_indices(quality: Sequence[float], kl: Sequence[float]) -> list[int]:
    """Indices of the front's points, ordered by KL ascending (then quality descending),
    the order in which a front line is drawn."""
    mask = pareto_mask(quality, kl)
    idx = np.flatnonzero(mask)
    q = np.asarray(quality, dtype=float)[idx]
    k = np.asarray(kl, dtype=float)[idx]
    return [int(i) for i in idx[np.lexsort((-q, k))]]


def hypervolume(quality: Sequence[float], kl: Sequence[float], reference: tuple[float, float]) -> float:
    """Area of the (quality ↑, KL ↓) plane the points dominate, bounded by `reference`
    (quality_ref, kl_ref): the union of the rectangles [kl_i, kl_ref] x [quality_ref,
    quality_i]. One number per front, larger is better, comparable between fronts measured
    from the same reference. Points with a non-finite value, quality <= quality_ref or
    KL >= kl_ref add nothing; dominated points add nothing either.

    Written here rather than taken from Optuna: its hypervolume is private API
    (optuna._hypervolume), and in two dimensions it is one sort and one sum.
    """
    q = np.asarray(quality, dtype=float)
    k = np.asarray(kl, dtype=float)
    if q.ndim != 1 or q.shape != k.shape:
        raise ValueError(
            f"hypervolume: quality and kl must be 1-D of the same length, got shapes "
            f"{q.shape} and {k.shape}"
        )
    q_ref, kl_ref = reference
    if not (math.isfinite(q_ref) and math.isfinite(kl_ref)):
        return math.nan
    keep = np.isfinite(q) & np.isfinite(k) & (q > q_ref) & (k < kl_ref)
    q, k = q[keep], k[keep]
    order = np.argsort(k, kind="stable")
    q, k = q[order], k[order]
    height = np.maximum.accumulate(q) - q_ref  # (n,): best quality at KL <= k_i
    width = np.diff(np.append(k, kl_ref))  # (n,): up to the next point's KL, the last to kl_ref
    return float(np.sum(height * width))
