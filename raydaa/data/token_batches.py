"""Batches sized by tokens, not rows (no Ray, no torch).

A padded batch costs rows x its longest row. With a fixed number of rows per batch, short
rows waste memory and a batch of long ones runs out of it: at 4096 tokens and Llama-3's
vocabulary, 32 pairs padded to the longest is 262k tokens of activations in one forward.
`token_batches` groups rows of similar length (cutting padding) under one token budget
(`resources.batch_tokens`), and `in_original_order` puts each batch's results back where
their rows came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Batches of row indices such that len(batch) x max(lengths in it) <= `budget`.

    Rows are taken longest first (ties in index order), so a batch holds rows of similar
    length and the biggest batch runs first (a budget too large for the device fails at
    once, not at the end); each batch is filled greedily. A row longer than the budget
    forms a batch of its own: it is never dropped. A length of 0 counts as 1. Every index
    of `lengths` appears exactly once; no rows, no batches.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"token budget must be a whole number >= 1, got {budget!r}")
    cost = []
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or int(length) != length or length < 0:
            raise ValueError(f"row {i}: length must be a whole number >= 0, got {length!r}")
        cost.append(max(1, int(length)))
    order = sorted(range(len(cost)), key=lambda i: (-cost[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # longest first: the batch's first row is its longest, and sets its width
        if current and (len(current) + 1) * cost[current[0]] > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def in_original_order(batches: Sequence[Sequence[int]], results: Sequence[Sequence[Any]]) -> list:
    """Per-batch results (one per row, in the batch's order) as one list in row order."""
    if len(batches) != len(results):
        raise ValueError(f"{len(batches)} batches but {len(results)} batch results")
    total = sum(len(b) for b in batches)
    out: list[Any] = [None] * total
    placed = [False] * total
    for batch, values in zip(batches, results, strict=True):
        if len(batch) != len(values):
            raise ValueError(f"a batch of {len(batch)} rows gave {len(values)} results")
        for i, value in zip(batch, values, strict=True):
            if not 0 <= i < total or placed[i]:
                raise ValueError(f"row index {i} is out of range or in two batches")
            out[i], placed[i] = value, True
    return out

