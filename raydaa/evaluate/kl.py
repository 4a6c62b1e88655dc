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

from raydaa.config.defaults import DEFAULT_BATCH_TOKENS
from raydaa.core.logprobs import IGNORE_INDEX, model_sequence_logps
from raydaa.data.token_batches import in_original_order, token_batches


@torch.no_grad()
def completion_logps(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    pad_token_id: int,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> torch.Tensor:
    """(N,) float64: log π(y|x) summed over completion tokens, in the rows' order.

    Rows of similar length are scored together in right-padded batches of at most
    `batch_tokens` tokens, padding included (`resources.batch_tokens`), through
    `model_sequence_logps`: chunked float32 log-softmax, never the (B, T, V) logits,
    whatever the model's dtype; the per-row sums come back in float64."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    batches = token_batches(lengths, batch_tokens)
    scored = []
    for picked in batches:
        width = max(lengths[i] for i in picked)
        ids = torch.full((len(picked), width), pad_token_id)
        labels = torch.full((len(picked), width), IGNORE_INDEX)
        mask = torch.zeros((len(picked), width), dtype=torch.long)
        for row, i in enumerate(picked):
            p, c = prompt_ids[i], completion_ids[i]
            ids[row, : lengths[i]] = torch.tensor(p + c)
            labels[row, len(p) : lengths[i]] = torch.tensor(c, dtype=torch.long)
            mask[row, : lengths[i]] = 1
        logps = model_sequence_logps(
            model, ids.to(model.device), mask.to(model.device), labels.to(model.device)
        )
        scored.append(logps.sum.double().cpu().tolist())
    return torch.tensor(in_original_order(batches, scored), dtype=torch.float64)


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


def kl_per_prompt(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor
) -> dict[str, torch.Tensor]:
    """(N,) float64 k1 and k3 of each sample, from per-sample sequence log-probs."""
    d = policy_logps.double() - reference_logps.double()
    k3 = torch.expm1(-d) + d  # (r - 1) - log r with r = e^{-d}, stable near d = 0
    return {"k1": d, "k3": k3}


def kl_estimates(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> dict[str, Estimate]:
    """k1 and k3 estimates of KL(π ‖ π_ref): the per-prompt values' means and intervals."""
    return {k: mean_interval(v) for k, v in kl_per_prompt(policy_logps, reference_logps).items()}
