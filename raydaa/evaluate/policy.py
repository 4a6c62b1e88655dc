"""Evaluate one aligned policy: sample on validation prompts, KL from the reference, win rate.

The baseline answers (the reference policy's own samples on the same prompts) are drawn
once per scenario and cached next to the reference, so every trial is judged against the
same answers and pays only for its own samples.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import torch

from raydaa.evaluate.generation import SamplingConfig, render_prompts, sample
from raydaa.evaluate.judges import build_judge, win_rate
from raydaa.evaluate.kl import completion_logps, kl_estimates


def validation_rows(scenario) -> list[dict]:
    """The first `generation.num_prompts` validation pairs."""
    from raydaa.stages import resolve_source

    rows = resolve_source(scenario.data.validation, scenario.data.validation_split)
    if isinstance(rows, str):
        from raydaa.data import load_rows

        rows, _ = load_rows(rows, split=scenario.data.validation_split)
    rows = list(rows)
    return rows[: scenario.generation.num_prompts or len(rows)]


def chosen_text(row: dict) -> str:
    chosen = row["chosen"]
    return chosen if isinstance(chosen, str) else chosen[-1]["content"]


def sampling_config(scenario) -> SamplingConfig:
    g = scenario.generation
    return SamplingConfig(
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
        max_new_tokens=g.max_new_tokens,
        seed=scenario.seed,
    )


def baseline_answers(scenario, reference_path: str, tokenizer, prompt_ids) -> list[str]:
    """The reference policy's samples on the evaluation prompts, computed once and cached."""
    from raydaa.stages import pretrained_model

    # Beside the checkpoint, not inside it: the reference cache fingerprints every file
    # of the checkpoint directory, so writing here would invalidate it.
    cache = Path(reference_path).parent / f"{Path(reference_path).name}.baseline_samples.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("prompt_ids") == prompt_ids:
            return data["texts"]
    model = pretrained_model(reference_path, dtype=torch.float32)
    samples = sample(model, tokenizer, prompt_ids, sampling_config(scenario))
    tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp")  # concurrent trials
    tmp.write_text(json.dumps({"prompt_ids": prompt_ids, "texts": samples.texts}))
    tmp.rename(cache)
    return samples.texts


def evaluate_policy(policy_path: str, reference_path: str, scenario) -> dict[str, float]:
    """Quality (judge win rate vs the reference policy's answers) and KL(π ‖ π_ref)."""
    from raydaa.stages import load_tokenizer, pretrained_model

    start = time.perf_counter()
    tokenizer = load_tokenizer(scenario)
    rows = validation_rows(scenario)
    prompts = [r["prompt"] for r in rows]
    prompt_ids = render_prompts(prompts, tokenizer, scenario.data.format == "conversational")
    if scenario.judge.baseline == "sft_policy":
        baselines = baseline_answers(scenario, reference_path, tokenizer, prompt_ids)
    elif scenario.judge.baseline == "chosen":
        baselines = [chosen_text(r) for r in rows]
    else:
        raise ValueError(
            f"judge baseline {scenario.judge.baseline!r} is not supported by the "
            "built-in evaluation; use sft_policy or chosen"
        )

    policy = pretrained_model(policy_path, dtype=torch.float32).eval()
    samples = sample(policy, tokenizer, prompt_ids, sampling_config(scenario))
    pad = tokenizer.pad_token_id
    pi = completion_logps(policy, samples.prompt_ids, samples.completion_ids, pad)
    del policy
    reference = pretrained_model(reference_path, dtype=torch.float32).eval()
    ref = completion_logps(reference, samples.prompt_ids, samples.completion_ids, pad)
    kl = kl_estimates(pi, ref)

    judged = scenario.judge.num_prompts or len(prompts)
    judge = build_judge(scenario.judge.type)
    wins = win_rate(judge.compare(prompts[:judged], samples.texts[:judged], baselines[:judged]))
    return {
        "quality": wins.mean,
        "quality_low": wins.low,
        "quality_high": wins.high,
        "kl": kl["k1"].mean,
        "kl_low": kl["k1"].low,
        "kl_high": kl["k1"].high,
        "kl_k3": kl["k3"].mean,
        "kl_k3_low": kl["k3"].low,
        "kl_k3_high": kl["k3"].high,
        "eval_prompts": len(prompts),
        "mean_completion_tokens": sum(map(len, samples.completion_ids))
        / len(samples.completion_ids),
        "eval_seconds": time.perf_counter() - start,
    }
