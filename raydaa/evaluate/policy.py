"""Evaluate one aligned policy: sample on validation prompts, KL from the reference, win rate.

The baseline answers (the reference policy's own samples on the same prompts) are drawn
once per scenario and cached next to the reference, so every trial is judged against the
same answers and pays only for its own samples.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from raydaa.evaluate.benchmarks_export import (
    benchmark_metrics,
    benchmark_prompts_path,
    export_benchmarks,
    generator_name,
)
from raydaa.evaluate.generation import render_prompts, sample
from raydaa.evaluate.judges import build_judge, win_rate
from raydaa.evaluate.kl import completion_logps, kl_estimates, kl_per_prompt
from raydaa.io import storage
from raydaa.train.metrics import peak_rss_mib


def on_eval_device(model):
    """The model on this process's GPU when it has one (a trial's evaluation task asks Ray
    for one on GPU clusters), else the CPU."""
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def eval_dtype(scenario) -> torch.dtype:
    """The dtype evaluation loads the policy and the reference in: the scenario's
    (`resources.bf16`: bf16, else float32). An 8B model in float32 is 32 GB of weights
    before sampling's KV cache, and bf16 is what the policy was trained and sampled in.
    KL does not need float32 weights: `model_sequence_logps` takes each token's
    log-softmax in float32 and `completion_logps` returns the sums in float64, so the
    sequence sums of per-token log-ratios (k1, k3) are not accumulated in bf16."""
    return torch.bfloat16 if scenario.resources.bf16 else torch.float32


def eval_model(path: str, scenario):
    """The HF checkpoint at `path` in `eval_dtype(scenario)`, on the evaluation device."""
    from raydaa.train.stages import pretrained_model

    return on_eval_device(pretrained_model(path, dtype=eval_dtype(scenario))).eval()


def validation_rows(scenario) -> list[dict]:
    """The first `generation.num_prompts` validation rows ({"prompt", "chosen", ...}, the
    prompt extracted when implicit), read as the preflight checks read them
    (raydaa.data.preflight.validation_set, which also tells their format)."""
    from raydaa.data.preflight import validation_set

    return validation_set(scenario).rows


def chosen_text(row: dict) -> str:
    chosen = row["chosen"]
    return chosen if isinstance(chosen, str) else chosen[-1]["content"]


def baseline_answers(scenario, reference_path: str, tokenizer, prompt_ids) -> list[str]:
    """The reference policy's samples on the evaluation prompts, computed once and cached."""
    # Beside the checkpoint, not inside it: the reference cache fingerprints every file
    # of the checkpoint directory, so writing here would invalidate it.
    cache = Path(reference_path).parent / f"{Path(reference_path).name}.baseline_samples.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("prompt_ids") == prompt_ids:
            return data["texts"]
    model = eval_model(reference_path, scenario)
    samples = sample(
        model,
        tokenizer,
        prompt_ids,
        scenario.generation,
        seed=scenario.seed,
        batch_tokens=scenario.resources.batch_tokens,
    )
    storage.write_text(cache, json.dumps({"prompt_ids": prompt_ids, "texts": samples.texts}))
    return samples.texts


def judged_rows(judge) -> list[dict]:
    """The first `judge.num_prompts` rows of `judge.prompts` (TL;DR: the golden validation
    summaries), each checked for the keys the judge needs."""
    from raydaa.data.sources import load_rows, resolve_source

    rows = resolve_source(judge.prompts, judge.prompts_split)
    if isinstance(rows, str):
        rows, _ = load_rows(rows, split=judge.prompts_split)
    rows = list(rows)[: judge.num_prompts or None]
    needed = {"reference": "completion", "chosen": "chosen"}.get(judge.baseline)
    for n, row in enumerate(rows):
        for key in ("prompt", needed):
            if key and key not in row:
                raise ValueError(
                    f"judge.prompts {judge.prompts} [{judge.prompts_split}]: row {n} has no "
                    f"{key!r} (judge.baseline {judge.baseline} needs prompt and {needed})"
                )
    return rows


def judged_baselines(scenario, reference_path, tokenizer, rows, ids, all_ids) -> list[str]:
    """The baseline answer per judged prompt (`judge.baseline`)."""
    baseline = scenario.judge.baseline
    if baseline == "sft_policy":
        # on the validation prompts, the cache holds all of them (KL samples them all)
        texts = baseline_answers(scenario, reference_path, tokenizer, all_ids or ids)
        return texts[: len(ids)]
    if baseline == "chosen":
        return [chosen_text(r) for r in rows]
    if baseline == "reference":
        return [r["completion"] for r in rows]
    raise ValueError(f"judge baseline {baseline!r} is not a pairwise judge's baseline")


def evaluate_policy(policy_path: str, reference_path: str, scenario) -> dict[str, Any]:
    """Quality (judge win rate vs the baseline answers, or the benchmark's score) and
    KL(π ‖ π_ref). Judge statistics (e.g. judge_unparseable) and benchmark export paths
    are added beside the fixed keys, and so are the sampling throughput
    (`sampling_tokens_per_s`: new tokens of the policy's validation samples per second of
    `generate`) and this process's peak memory (`eval_peak_rss_mib`; `eval_peak_gpu_mib`
    where CUDA is there). Models load in `eval_dtype(scenario)`; every scoring and
    sampling batch holds at most `resources.batch_tokens` tokens.

    `"records"` holds the per-prompt records behind those numbers: one dict per prompt
    with the columns of raydaa.io.prompt_records.RECORDS_SCHEMA (`prompt_records`). It is
    the one value that is not a scalar metric: take it out before reporting to Tune."""
    from raydaa.config.evaluation import BENCHMARKS
    from raydaa.data.preflight import validation_set
    from raydaa.data.tokenize import load_tokenizer

    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # this evaluation's peak, not the process's
    budget = scenario.resources.batch_tokens
    config = scenario.judge
    benchmarks = [b for b in (config.type, *config.extra_benchmarks) if b in BENCHMARKS]
    for benchmark in benchmarks:  # configuration errors before any sampling
        benchmark_prompts_path(config, benchmark)
    judge = None if config.type in BENCHMARKS else build_judge(config)

    tokenizer = load_tokenizer(scenario)
    validation = validation_set(scenario)  # data.format auto: the format is the data's
    rows, conversational = validation.rows, validation.conversational
    prompts = [r["prompt"] for r in rows]
    prompt_ids = render_prompts(prompts, tokenizer, conversational)
    if judge is not None:
        if config.prompts is None:  # the validation prompts, where KL is measured too
            judged = rows[: config.num_prompts or len(rows)]
            judged_ids = prompt_ids[: len(judged)]
        else:
            judged = judged_rows(config)
            judged_ids = render_prompts([r["prompt"] for r in judged], tokenizer, conversational)
        all_ids = prompt_ids if config.prompts is None else None
        baselines = judged_baselines(
            scenario, reference_path, tokenizer, judged, judged_ids, all_ids
        )
        # the baseline answers as the policy would emit them: the probe that tells
        # whether two trials trained the same model
        baseline_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in baselines]

    policy = eval_model(policy_path, scenario)
    samples = sample(
        policy, tokenizer, prompt_ids, scenario.generation, seed=scenario.seed, batch_tokens=budget
    )
    pad = tokenizer.pad_token_id
    pi = completion_logps(policy, samples.prompt_ids, samples.completion_ids, pad, budget)
    judge_samples = None
    if judge is not None:
        if config.prompts is None:
            answers = samples.texts[: len(judged)]
        else:
            judge_samples = sample(
                policy,
                tokenizer,
                judged_ids,
                scenario.generation,
                seed=scenario.seed,
                batch_tokens=budget,
            )
            answers = judge_samples.texts
        probe = completion_logps(policy, judged_ids, baseline_ids, pad, budget).tolist()
    outcomes = []
    if benchmarks:
        out_dir = Path(policy_path).parent / "benchmarks"
        name = generator_name(scenario, policy_path)
        outcomes = export_benchmarks(policy, tokenizer, scenario, benchmarks, out_dir, name)
        for outcome in outcomes:
            print(outcome.note, flush=True)
    del policy
    reference = eval_model(reference_path, scenario)
    ref = completion_logps(reference, samples.prompt_ids, samples.completion_ids, pad, budget)
    del reference
    kl = kl_estimates(pi, ref)

    judged_columns = []
    if judge is not None:
        verdicts = judge.compare([r["prompt"] for r in judged], answers, baselines)
        wins = win_rate(verdicts)
        quality = {"quality": wins.mean, "quality_low": wins.low, "quality_high": wins.high}
        quality |= getattr(judge, "stats", {})
        judged_columns = [
            {"baseline_text": text, "baseline_tokens": len(ids), "verdict": v, "probe_logp": p}
            for text, ids, v, p in zip(baselines, baseline_ids, verdicts, probe, strict=True)
        ]
    else:
        quality = benchmark_metrics(outcomes, config.type)
    records = prompt_records(
        prompts,
        samples,
        kl_per_prompt(pi, ref),
        judged_columns,
        judge_prompts=None if judge_samples is None else [r["prompt"] for r in judged],
        judge_samples=judge_samples,
    )
    return quality | {
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
    } | resource_metrics(samples) | {"records": records}


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


def resource_metrics(samples) -> dict[str, float]:
    """Sampling throughput of the policy's samples and this process's peak memory, MiB."""
    metrics = {
        "sampling_tokens_per_s": samples.new_tokens / samples.generate_seconds
        if samples.generate_seconds > 0
        else math.nan,
        "eval_peak_rss_mib": peak_rss_mib(),
    }
    if torch.cuda.is_available():
        metrics["eval_peak_gpu_mib"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return metrics
