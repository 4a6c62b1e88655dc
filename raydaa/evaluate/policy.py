"""Evaluate one aligned policy: sample on validation prompts, KL from the reference, win rate.

The baseline answers (the reference policy's own samples on the same prompts) are drawn
once per scenario and cached next to the reference, so every trial is judged against the
same answers and pays only for its own samples.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raydaa.evaluate.benchmarks_export import (
    benchmark_metrics,
    benchmark_prompts_path,
    export_benchmarks,
    generator_name,
)
from raydaa.evaluate.generation import Samples, render_prompts, sample
from raydaa.evaluate.judges import Judge, build_judge, win_rate
from raydaa.evaluate.kl import completion_logps, kl_estimates, kl_per_prompt
from raydaa.evaluate.records import prompt_records
from raydaa.io import storage
from raydaa.io.memory import peak_rss_mib


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
    from raydaa.io.models import pretrained_model

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
    """The baseline answer per judged prompt (`judge.baseline`). `ids` are the first
    prompts of `all_ids`, every prompt of the set they come from (every validation
    prompt, or every judged prompt): the reference policy's answers are sampled and cached
    for the whole set once, and a subset takes the first of them."""
    baseline = scenario.judge.baseline
    if baseline == "sft_policy":
        texts = baseline_answers(scenario, reference_path, tokenizer, all_ids or ids)
        return texts[: len(ids)]
    if baseline == "chosen":
        return [chosen_text(r) for r in rows]
    if baseline == "reference":
        return [r["completion"] for r in rows]
    raise ValueError(f"judge baseline {baseline!r} is not a pairwise judge's baseline")


@dataclass
class EvaluationSet:
    """The yardstick a policy is measured on, everything but the policy: the prompts
    (KL is measured on them), the judge, the prompts it judges and their baseline answers.
    Built once (`evaluation_set`) and used for any number of policies."""

    tokenizer: Any
    prompts: list
    """Validation prompts (strings or message lists): each gets a policy sample and its KL."""
    prompt_ids: list[list[int]]
    judge: Judge | None
    """None for a benchmark scenario (its score comes from the benchmark's export)."""
    judged: list[dict]
    """The judged rows ({"prompt", ...}): the first validation rows, or `judge.prompts`'."""
    judged_ids: list[list[int]]
    on_validation: bool
    """The judged prompts are the first validation prompts (their samples are reused)."""
    baselines: list[str]
    """The baseline answer per judged prompt (`judge.baseline`)."""
    baseline_ids: list[list[int]]
    """The baseline answers as the policy would emit them: the probe that tells whether two
    trials trained the same model."""
    benchmarks: list[str]


def evaluation_set(scenario, reference_path: str, *, limit: int | None = None) -> EvaluationSet:
    """The scenario's yardstick; `limit`: only the first `limit` validation prompts and
    the first `limit` judged prompts (an intermediate evaluation's subset). The baseline
    answers of a subset are the first ones of the full set's (one cache, one sample of
    the reference policy per scenario), so a subset is judged exactly as the full set is.
    Configuration errors (benchmark prompt files, the judge's endpoint) are raised here,
    before any sampling."""
    from raydaa.config.evaluation import BENCHMARKS
    from raydaa.data.preflight import validation_set
    from raydaa.data.tokenize import load_tokenizer

    config = scenario.judge
    benchmarks = [b for b in (config.type, *config.extra_benchmarks) if b in BENCHMARKS]
    for benchmark in benchmarks:  # configuration errors before any sampling
        benchmark_prompts_path(config, benchmark)
    judge = None if config.type in BENCHMARKS else build_judge(config)

    tokenizer = load_tokenizer(scenario)
    validation = validation_set(scenario)  # data.format auto: the format is the data's
    rows, conversational = validation.rows, validation.conversational
    all_ids = render_prompts([r["prompt"] for r in rows], tokenizer, conversational)
    rows, prompt_ids = rows[:limit], all_ids[:limit]
    judged, judged_ids, baselines, baseline_ids = [], [], [], []
    if judge is not None:
        if config.prompts is None:  # the validation prompts, where KL is measured too
            judged = rows[: config.num_prompts or len(rows)]
            judged_ids = prompt_ids[: len(judged)]
            every_id = all_ids  # the baseline cache holds every validation prompt
        else:
            every_row = judged_rows(config)
            every_id = render_prompts([r["prompt"] for r in every_row], tokenizer, conversational)
            judged, judged_ids = every_row[:limit], every_id[:limit]
        baselines = judged_baselines(scenario, reference_path, tokenizer, judged, judged_ids,
                                     every_id)
        baseline_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in baselines]
    return EvaluationSet(
        tokenizer=tokenizer,
        prompts=[r["prompt"] for r in rows],
        prompt_ids=prompt_ids,
        judge=judge,
        judged=judged,
        judged_ids=judged_ids,
        on_validation=config.prompts is None,
        baselines=baselines,
        baseline_ids=baseline_ids,
        benchmarks=benchmarks,
    )


@dataclass
class PolicySide:
    """What a policy contributes to its evaluation, measured while it is loaded: its
    samples and their log-probs, its answers to the judged prompts and the probe."""

    samples: Samples
    logps: torch.Tensor
    """(N,) float64: log π(y|x) of each validation sample."""
    answers: list[str]
    judge_samples: Samples | None
    """The samples on the judge's own prompts (when they are not the validation prompts)."""
    probe: list[float]
    outcomes: list
    """Benchmark exports (a benchmark scenario's evaluation)."""


def measure_policy(policy, ev: EvaluationSet, scenario, *, benchmarks_dir: Path | None = None,
                   generator: str | None = None) -> PolicySide:
    """Sample `policy` (a loaded model: from a checkpoint, or a training engine's module)
    on the evaluation prompts and score what the yardstick needs from it; with
    `benchmarks_dir`, also the benchmarks' exports (`generator`: their model name)."""
    budget = scenario.resources.batch_tokens
    pad = ev.tokenizer.pad_token_id
    samples = sample(policy, ev.tokenizer, ev.prompt_ids, scenario.generation,
                     seed=scenario.seed, batch_tokens=budget)
    logps = completion_logps(policy, samples.prompt_ids, samples.completion_ids, pad, budget)
    answers, judge_samples, probe = [], None, []
    if ev.judge is not None:
        if ev.on_validation:
            answers = samples.texts[: len(ev.judged)]
        else:
            judge_samples = sample(policy, ev.tokenizer, ev.judged_ids, scenario.generation,
                                   seed=scenario.seed, batch_tokens=budget)
            answers = judge_samples.texts
        probe = completion_logps(policy, ev.judged_ids, ev.baseline_ids, pad, budget).tolist()
    outcomes = []
    if ev.benchmarks and benchmarks_dir is not None:
        outcomes = export_benchmarks(policy, ev.tokenizer, scenario, ev.benchmarks,
                                     benchmarks_dir, generator)
        for outcome in outcomes:
            print(outcome.note, flush=True)
    return PolicySide(samples, logps, answers, judge_samples, probe, outcomes)


def reference_logps(reference, side: PolicySide, ev: EvaluationSet, scenario) -> torch.Tensor:
    """(N,) float64: log π_ref(y|x) of the policy's validation samples."""
    return completion_logps(reference, side.samples.prompt_ids, side.samples.completion_ids,
                            ev.tokenizer.pad_token_id, scenario.resources.batch_tokens)


def score(ev: EvaluationSet, side: PolicySide, ref_logps: torch.Tensor, scenario) -> dict[str, Any]:
    """Quality (judge win rate vs the baseline answers, or the benchmark's score), KL(π ‖
    π_ref) (k1 and k3 with 95% intervals), and "records": the per-prompt records."""
    kl = kl_estimates(side.logps, ref_logps)
    judged_columns = []
    if ev.judge is not None:
        prompts = [r["prompt"] for r in ev.judged]
        verdicts = ev.judge.compare(prompts, side.answers, ev.baselines)
        wins = win_rate(verdicts)
        quality = {"quality": wins.mean, "quality_low": wins.low, "quality_high": wins.high}
        quality |= getattr(ev.judge, "stats", {})
        judged_columns = [
            {"baseline_text": text, "baseline_tokens": len(ids), "verdict": v, "probe_logp": p}
            for text, ids, v, p in zip(ev.baselines, ev.baseline_ids, verdicts, side.probe,
                                       strict=True)
        ]
    else:
        quality = benchmark_metrics(side.outcomes, scenario.judge.type)
    records = prompt_records(
        ev.prompts,
        side.samples,
        kl_per_prompt(side.logps, ref_logps),
        judged_columns,
        judge_prompts=None if side.judge_samples is None else [r["prompt"] for r in ev.judged],
        judge_samples=side.judge_samples,
    )
    completions = side.samples.completion_ids
    return quality | {
        "kl": kl["k1"].mean,
        "kl_low": kl["k1"].low,
        "kl_high": kl["k1"].high,
        "kl_k3": kl["k3"].mean,
        "kl_k3_low": kl["k3"].low,
        "kl_k3_high": kl["k3"].high,
        "eval_prompts": len(ev.prompts),
        "mean_completion_tokens": sum(map(len, completions)) / len(completions),
        "records": records,
    }


def evaluate_policy(policy_path: str, reference_path: str, scenario) -> dict[str, Any]:
    """Quality (judge win rate vs the baseline answers, or the benchmark's score) and
    KL(π ‖ π_ref) of the checkpoint at `policy_path`. Judge statistics (e.g.
    judge_unparseable) and benchmark export paths are added beside the fixed keys, and so
    are the sampling throughput (`sampling_tokens_per_s`: new tokens of the policy's
    validation samples per second of `generate`) and this process's peak memory
    (`eval_peak_rss_mib`; `eval_peak_gpu_mib` where CUDA is there). Models load in
    `eval_dtype(scenario)`, one at a time (the policy is released before the reference
    loads); every scoring and sampling batch holds at most `resources.batch_tokens` tokens.

    `"records"` holds the per-prompt records behind those numbers: one dict per prompt
    with the columns of raydaa.io.prompt_records.RECORDS_SCHEMA (`prompt_records`). It is
    the one value that is not a scalar metric: take it out before reporting to Tune."""
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # this evaluation's peak, not the process's
    ev = evaluation_set(scenario, reference_path)
    policy = eval_model(policy_path, scenario)
    side = measure_policy(policy, ev, scenario, benchmarks_dir=Path(policy_path).parent / "benchmarks",
                          generator=generator_name(scenario, policy_path))
    del policy
    reference = eval_model(reference_path, scenario)
    ref = reference_logps(reference, side, ev, scenario)
    del reference
    metrics = score(ev, side, ref, scenario)
    records = metrics.pop("records")
    return metrics | {"eval_seconds": time.perf_counter() - start} | resource_metrics(
        side.samples) | {"records": records}


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
