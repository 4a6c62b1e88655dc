"""Per-prompt evaluation records: what lies behind a trial's quality and KL, one record
per prompt (the columns of raydaa.io.prompt_records.RECORDS_SCHEMA)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch

NOT_JUDGED = {
    "baseline_text": None,
    "baseline_tokens": None,
    "verdict": math.nan,
    "probe_logp": math.nan,
}
"""The judge columns of a prompt the judge did not see (a benchmark scenario's, or past
`judge.num_prompts`)."""


def prompt_records(
    prompts: list,
    samples,
    kl: dict[str, torch.Tensor],
    judged: list[dict],
    *,
    judge_prompts: list | None = None,
    judge_samples=None,
) -> list[dict]:
    """One record per evaluation prompt (RECORDS_SCHEMA): every validation prompt with the
    policy's sample and its per-prompt KL (`kl`: "k1", "k3" tensors in prompt order);
    `judged` holds the judge's columns (baseline, verdict, probe) per judged prompt, the
    first validation prompts, or, when the judge has its own prompt set (`judge_prompts`,
    answered by `judge_samples`), rows of source "judge" with no KL."""
    on_validation = judge_prompts is None
    records = []
    for i, prompt in enumerate(prompts):
        records.append(
            {"prompt_id": i, "source": "validation", "prompt": prompt_json(prompt)}
            | policy_columns(samples, i)
            | {"kl_k1": float(kl["k1"][i]), "kl_k3": float(kl["k3"][i])}
            | (judged[i] if on_validation and i < len(judged) else NOT_JUDGED)
        )
    for j, prompt in enumerate(judge_prompts or []):
        records.append(
            {"prompt_id": j, "source": "judge", "prompt": prompt_json(prompt)}
            | policy_columns(judge_samples, j)
            | {"kl_k1": math.nan, "kl_k3": math.nan}
            | judged[j]
        )
    return records


def prompt_json(prompt) -> str:
    """A prompt (a string or a list of chat messages) as JSON text."""
    return json.dumps(prompt, ensure_ascii=False)


def policy_columns(samples, i: int) -> dict[str, Any]:
    return {"policy_text": samples.texts[i], "policy_tokens": len(samples.completion_ids[i])}
