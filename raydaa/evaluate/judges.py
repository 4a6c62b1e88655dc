"""Judges behind one interface: each compares two completions of the same prompt."""

from __future__ import annotations

import math
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
    """Win rate with ties counted half, and a normal 95% interval over prompts, kept
    within [0, 1] (the normal approximation can reach past a bound near it)."""
    if not outcomes:
        raise ValueError("no judgments to compute a win rate from")
    rate = mean_interval(torch.tensor(list(outcomes), dtype=torch.float64))
    if math.isnan(rate.low):  # one prompt: no interval
        return rate
    return Estimate(rate.mean, max(0.0, rate.low), min(1.0, rate.high))


def build_judge(config) -> Judge:
    """The pairwise judge a scenario's `judge` section describes (a JudgeConfig), or a
    judge that needs no configuration by name ("gold"). Endpoint and key problems are
    raised here, before any sampling."""
    kind = config if isinstance(config, str) else config.type
    if kind == "gold":
        return GoldJudge()
    if isinstance(config, str):
        raise ValueError(f"unknown judge {kind!r} without a configuration; by name: ['gold']")
    if kind == "gpt_side_by_side":
        from raydaa.evaluate.llm_judge import LLMJudge

        return LLMJudge.from_config(config)
    if kind == "reward_model":
        from raydaa.evaluate.rm_judge import RewardModelJudge

        return RewardModelJudge.from_config(config)
    raise ValueError(
        f"unknown judge {kind!r}: not a pairwise judge (benchmarks are exported by "
        "raydaa.evaluate.benchmarks_export); pairwise: ['gold', 'gpt_side_by_side', 'reward_model']"
    )
