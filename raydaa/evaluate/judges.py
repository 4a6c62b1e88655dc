"""Judges behind one interface: each compares two completions of the same prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from raydaa.evaluate.kl import Estimate, mean_interval


class Judge(Protocol):
    name: str

    def compare(
        self, prompts: Sequence, candidates: Sequence[str], baselines: Sequence[str]
    ) -> list[float]:
        """Per prompt: 1.0 when the candidate wins, 0.0 when the baseline wins, 0.5 on a tie."""


class GoldJudge:
    """The tiny scenario's programmatic judge (its gold score decides; equal scores tie)."""

    name = "gold"

    def compare(self, prompts, candidates, baselines):
        from raydaa.scenarios import gold_prefers

        return [
            gold_prefers(p, c, b) for p, c, b in zip(prompts, candidates, baselines, strict=True)
        ]


def win_rate(outcomes: Sequence[float]) -> Estimate:
    """Win rate with ties counted half, and a normal 95% interval over prompts."""
    if not outcomes:
        raise ValueError("no judgments to compute a win rate from")
    return mean_interval(torch.tensor(list(outcomes), dtype=torch.float64))


def build_judge(kind: str, **options) -> Judge:
    if kind == "gold":
        return GoldJudge()
    raise ValueError(f"unknown judge {kind!r}; available here: ['gold']")
