"""KL(π ‖ π_ref) estimated on the policy's own samples.

For a sampled completion y ~ π(·|x), let d = log π(y|x) - log π_ref(y|x), the sequence-level
sum of per-token log-ratios under the untempered policy and reference. Then
    k1 = d                     unbiased for KL(π ‖ π_ref) when y ~ π, can be negative;
    k3 = (r - 1) - log r,  r = π_ref(y|x)/π(y|x) = e^{-d}
                               also unbiased, never negative, lower variance (Schulman 2020).
Samples are drawn with the evaluation's sampling parameters (temperature 0.9, top-k 40 by
default, paper Table 8), so strictly this is the KL measured on those samples; at
temperature 1 with no truncation it is the sequence-level KL itself. Reported per prompt,
as the mean over prompts with a normal 95% interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raydaa.core.logprobs import IGNORE_INDEX, sequence_logps


@torch.no_grad()
def completion_logps(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    pad_token_id: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """(N,) float64: log π(y|x) summed over completion tokens, right-padded batches."""
    from raydaa.core.logprobs import position_ids_from_mask

    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = list(
            zip(
                prompt_ids[start : start + batch_size],
                completion_ids[start : start + batch_size],
                strict=True,
            )
        )
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad_token_id)
        labels = torch.full((len(rows), width), IGNORE_INDEX)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            seq = p + c
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(c)
            mask[i, : len(seq)] = 1
        logits = model(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=position_ids_from_mask(mask).to(model.device),
            use_cache=False,
        ).logits
        out.append(sequence_logps(logits.float(), labels.to(model.device)).sum.double().cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float


def mean_interval(values: torch.Tensor) -> Estimate:
    """Mean with a normal-approximation 95% interval (1.96 standard errors)."""
    values = values.double()
    mean = values.mean().item()
    half = (
        1.96 * values.std(unbiased=True).item() / math.sqrt(len(values))
        if len(values) > 1
        else float("nan")
    )
    return Estimate(mean, mean - half, mean + half)


def kl_estimates(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> dict[str, Estimate]:
    """k1 and k3 estimates of KL(π ‖ π_ref) from per-sample sequence log-probs."""
    d = policy_logps.double() - reference_logps.double()
    k3 = torch.expm1(-d) + d  # (r - 1) - log r with r = e^{-d}, stable near d = 0
    return {"k1": mean_interval(d), "k3": mean_interval(k3)}
