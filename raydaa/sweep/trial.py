"""One trial of a sweep: train one configuration (one Ray Train run), evaluate it, report
once. Shared by `raydaa search` and `raydaa study`.
"""

from __future__ import annotations

import math
import time
from pathlib import PurePosixPath
from typing import Any

from ray import tune

from raydaa.config.search_space import AlignConfig
from raydaa.io import storage
from raydaa.io.prompt_records import write_records
from raydaa.io.results_store import read_row
from raydaa.sweep.curve_loggers.logger import open_curves
from raydaa.sweep.pruning import PRUNED, RUNNING
from raydaa.sweep.telemetry import (
    TrainMetricsCallback,
    record_trial_start,
    sweep_name,
    trial_name,
)
from raydaa.train.stages import AlignmentInputs, recipe_steps
from raydaa.train.timeline import PHASES, phase_seconds


def trial_driver(config: dict[str, Any], *, scenario, inputs: AlignmentInputs, results: str,
                 curves=None) -> None:
    """One trial: train (one TorchTrainer), evaluate, report once. Never raises for a bad
    configuration: a failed or diverged run is reported with its reason. `curves`: where
    its training curves go (raydaa.sweep.curve_loggers; None: TensorBoard)."""
    from raydaa.train.stages import run_alignment

    trial_id = tune.get_context().get_trial_id()
    name = trial_name(config, trial_id)
    method = str(config["method"])
    done = read_row(results, scenario.name, method, trial_id)
    if done is not None and done["status"] in ("finished", "diverged", PRUNED):
        # Its row was written, but the sweep was killed before Tune saved that it ended:
        # --resume starts it again. Report the stored row instead of training anew (its
        # per-prompt records were written before that row).
        tune.report(stored_result(done))
        return
    tags = {"sweep": sweep_name(tune.get_context()), "scenario": scenario.name,
            "method": method, "trial": name}
    align = AlignConfig.from_config(config)
    start, started_at = time.perf_counter(), time.time()
    total_steps = recipe_steps(scenario.align, inputs.rows, align.epochs)
    record_trial_start(tags, total_steps)
    callbacks = [TrainMetricsCallback(tags, total_steps)]
    if scenario.intermediate_eval.eval_every is not None:
        from raydaa.sweep.intermediate import IntermediateResults

        # the run's intermediate evaluations become this trial's intermediate results
        callbacks.append(IntermediateResults({"reference_path": inputs.reference_path,
                                              "reference_cache": inputs.cache or ""}))
    # every training report (and, at the end, the final result) on TensorBoard/MLflow/W&B
    curve_log = open_curves(curves, config, trial=name, trial_id=trial_id, scenario=scenario.name)
    callbacks.append(curve_log)
    # Same name on a Tune retry or --resume: Ray Train resumes the run from its checkpoint.
    run = run_alignment(scenario, align, inputs, results=results, name=name, callbacks=callbacks)
    returned_at = time.time()
    final = run.final
    metrics: dict[str, Any] = {
        "status": run.status if run.status != "stopped" else "failed",
        "error": run.error or "",
        # the step the run reached: a scheduler's clock needs it in every result
        "step": final.get("step", 0),
        "final_loss": final.get("loss", math.nan),
        "reward_accuracy": final.get("rewards/accuracy", math.nan),
        "diverged_step": final.get("diverged_step", -1),
        # counted since step 0 even when workers were restarted from a checkpoint
        "tokens_seen": final.get("tokens_seen", sum(h.get("tokens", 0) for h in run.history)),
        "checkpoint_path": run.path or "",
        # unmeasured (no GPU, no evaluation) is None, a null in the store: rows then
        # compare equal when read back, which NaN never does
        "peak_rss_mib": final.get("peak_rss_mib"),
        "peak_gpu_mib": final.get("peak_gpu_mib"),
        "node_id": run.node_id or "",
        "hostname": run.hostname or "",
        "reference_path": inputs.reference_path,
        "reference_cache": inputs.cache or "",
        "quality": math.nan,
        "quality_low": math.nan,
        "quality_high": math.nan,
        "kl": math.nan,
        "kl_low": math.nan,
        "kl_high": math.nan,
        "kl_k3": math.nan,
        "eval_peak_rss_mib": None,
        "eval_peak_gpu_mib": None,
        "sampling_tokens_per_s": None,
    }
    if run.status == "finished":
        try:
            evaluation = evaluate_trial(run.path, inputs.reference_path, scenario, name=name)
            # Per-prompt records go to storage here, never through Tune: written before the
            # report, so a row in the store always has its records.
            write_records(results, scenario.name, method, trial_id, evaluation.pop("records"))
            metrics |= evaluation
            print(f"{name}: {evaluation_line(metrics)}", flush=True)
        except Exception as err:  # the trained model stays on disk; the row says why
            metrics |= {"status": "failed", "error": f"evaluation: {type(err).__name__}: {err}"}
    metrics["device_seconds"] = (time.perf_counter() - start) * max(
        1, scenario.resources.num_workers
    )
    evaluated = time.time() if math.isfinite(metrics["quality"]) else None
    metrics |= phase_seconds(run.timeline, started=started_at, returned=returned_at,
                             evaluated=evaluated)
    curve_log.finish(run.history, metrics)
    tune.report(metrics)


def evaluation_line(metrics: dict[str, Any]) -> str:
    """`evaluation: quality 0.61, KL 0.84, 120 s, sampling 512 tokens/s, peak memory
    1.20 GiB resident`: what the evaluation measured, for the trial's log."""
    parts = [f"quality {metrics['quality']:.4g}", f"KL {metrics['kl']:.4g}"]
    for key, fmt in (("eval_seconds", "{:.0f} s"), ("sampling_tokens_per_s", "sampling {:,.0f} tokens/s"),
                     ("eval_peak_rss_mib", "peak memory {:.2f} GiB resident"),
                     ("eval_peak_gpu_mib", "{:.2f} GiB GPU")):
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            value = value / 1024 if key.endswith("_mib") else value
            parts.append(fmt.format(value))
    return "evaluation: " + ", ".join(parts)


REUSED = "reused_row"
"""Set on a result that re-reports a trial's stored row (a rerun after a killed sweep)."""
RESULT_KEYS = (
    "quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3",
    "eval_prompts", "final_loss", "reward_accuracy", "tokens_seen", "device_seconds",
    "checkpoint_path", "diverged_step", "node_id", "hostname", "reference_path",
    "reference_cache", "peak_rss_mib", "peak_gpu_mib", "eval_peak_rss_mib",
    "eval_peak_gpu_mib", "sampling_tokens_per_s", *PHASES,
)
"""What a trial reports and its store row keeps, besides its config, status and error."""


def stored_result(row: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored row as the last result it gave Tune: a pruned trial's was an
    intermediate one (status running at its step), a finished or diverged trial's the
    driver's final result; `step` always (a scheduler's clock)."""
    result = {k: v for k, v in row.items() if k in (*RESULT_KEYS, "status", "error")}
    if row["status"] == PRUNED:
        result["status"] = RUNNING
    steps = (row.get("eval_step"), row.get("diverged_step"), 0)
    return result | {"step": next(s for s in steps if s is not None), REUSED: True}


def _evaluate_local(policy: str, reference: str, scenario) -> dict[str, Any]:
    import ray

    from raydaa.evaluate.policy import evaluate_policy

    # transformers reads local files: object-store paths are copied to this node
    metrics = evaluate_policy(storage.local_copy(policy), storage.local_copy(reference), scenario)
    # GPUs Ray reserved for this evaluation (0 when it runs in the trial's process)
    return metrics | {"eval_gpus": len(ray.get_gpu_ids()) if ray.is_initialized() else 0}


def evaluate_trial(policy: str, reference: str, scenario, name: str = "") -> dict[str, Any]:
    """Evaluate a trained policy. On CPU scenarios, in the trial's own process. On GPU
    scenarios, as a Ray task asking for one GPU: the trial's driver holds no GPU (its
    workers' GPUs are free again once training ends), and sampling an 8B model on a CPU
    would take hours. "DEFAULT" scheduling takes the task out of the trial's placement
    group, which has no GPU bundle."""
    if not scenario.resources.use_gpu:
        return _evaluate_local(policy, reference, scenario)
    import ray

    task = ray.remote(_evaluate_local).options(
        num_gpus=1,
        num_cpus=1,
        scheduling_strategy="DEFAULT",
        # the task's name in the dashboard: its trial's (a checkpoint's folder is `hf`)
        name=f"evaluate {name or PurePosixPath(policy).parent.parent.name}",
    )
    return ray.get(task.remote(policy, reference, scenario))


