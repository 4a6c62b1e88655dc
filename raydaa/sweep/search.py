"""`raydaa search`: Ray Tune (grid or Optuna) over one method's space in one scenario.

    shared once    reference policy (SFT), tokenized preference data, reference cache
    per trial      trial_driver: one Ray Train TorchTrainer (named like the trial,
                   `dpo-b0.1-lr1e-06-<trial id>`), then evaluation (quality, KL)
                   -> tune.report; live raydaa_* metrics (raydaa/telemetry.py)
    per result     ResultsStoreCallback: one row per trial in the results store

`results` is a storage path every node sees (raydaa/storage.py): a directory (local, or
NFS/EFS on a cluster) or s3:// / gs://. Trials receive only storage paths.

The Optuna study lives in SQLite under the results directory (or any `--optuna-storage`
URL), named `<scenario>-<method>-<setup>`, so `optuna-dashboard sqlite:///...` opens it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ray import tune

from raydaa.config.defaults import DEFAULT_RESULTS
from raydaa.config.search_space import CONFIG_KEYS, AlignConfig
from raydaa.io import storage
from raydaa.io.results_store import read_row, store_root, write_row
from raydaa.sweep.report_refresh import ReportRefreshCallback
from raydaa.sweep.telemetry import TrainMetricsCallback, record_trial, trial_name
from raydaa.train.stages import scenario_root


def trial_driver(config: dict[str, Any], *, scenario, shared: dict[str, Any], results: str) -> None:
    """One trial: train (one TorchTrainer), evaluate, report once. Never raises for a bad
    configuration: a failed or diverged run is reported with its reason."""
    from raydaa.train.stages import run_alignment

    trial_id = tune.get_context().get_trial_id()
    name = trial_name(config, trial_id)
    done = read_row(results, scenario.name, str(config["method"]), trial_id)
    if done is not None and done["status"] in ("finished", "diverged"):
        # Its row was written, but the sweep was killed before Tune saved that it ended:
        # --resume starts it again. Report the stored row instead of training anew.
        tune.report({k: v for k, v in done.items() if k in (*RESULT_KEYS, "status", "error")} | {REUSED: True})
        return
    tags = {"scenario": scenario.name, "method": str(config["method"]), "trial": name}
    align = AlignConfig.from_config(config)
    start = time.perf_counter()
    # Same name on a Tune retry or --resume: Ray Train resumes the run from its checkpoint.
    run = run_alignment(
        scenario, align, shared, results=results, name=name, callbacks=[TrainMetricsCallback(tags)]
    )
    final = run.final
    metrics: dict[str, Any] = {
        "status": run.status if run.status != "stopped" else "failed",
        "error": run.error or "",
        "final_loss": final.get("loss", math.nan),
        "reward_accuracy": final.get("rewards/accuracy", math.nan),
        "diverged_step": final.get("diverged_step", -1),
        # counted since step 0 even when workers were restarted from a checkpoint
        "tokens_seen": final.get("tokens_seen", sum(h.get("tokens", 0) for h in run.history)),
        "checkpoint_path": run.path or "",
        "node_id": run.node_id or "",
        "hostname": run.hostname or "",
        "reference_path": shared["reference"]["path"],
        "reference_cache": shared["cache"] or "",
        "quality": math.nan,
        "quality_low": math.nan,
        "quality_high": math.nan,
        "kl": math.nan,
        "kl_low": math.nan,
        "kl_high": math.nan,
        "kl_k3": math.nan,
    }
    if run.status == "finished":
        try:
            metrics |= evaluate_trial(run.path, shared["reference"]["path"], scenario)
        except Exception as err:  # the trained model stays on disk; the row says why
            metrics |= {"status": "failed", "error": f"evaluation: {type(err).__name__}: {err}"}
    metrics["device_seconds"] = (time.perf_counter() - start) * max(
        1, scenario.resources.num_workers
    )
    tune.report(metrics)


REUSED = "reused_row"
"""Set on a result that re-reports a trial's stored row (a rerun after a killed sweep)."""
RESULT_KEYS = (
    "quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3",
    "final_loss", "reward_accuracy", "tokens_seen", "device_seconds", "checkpoint_path",
    "diverged_step", "node_id", "hostname", "reference_path", "reference_cache",
)
"""What a trial reports and its store row keeps, besides its config, status and error."""


def _evaluate_local(policy: str, reference: str, scenario) -> dict[str, Any]:
    import ray

    from raydaa.evaluate.policy import evaluate_policy

    # transformers reads local files: object-store paths are copied to this node
    metrics = evaluate_policy(storage.local_copy(policy), storage.local_copy(reference), scenario)
    # GPUs Ray reserved for this evaluation (0 when it runs in the trial's process)
    return metrics | {"eval_gpus": len(ray.get_gpu_ids()) if ray.is_initialized() else 0}


def evaluate_trial(policy: str, reference: str, scenario) -> dict[str, Any]:
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
        name=f"evaluate:{PurePosixPath(policy).name}",
    )
    return ray.get(task.remote(policy, reference, scenario))


def _trial_name(trial) -> str:
    return trial_name(trial.config, trial.trial_id)


class ResultsStoreCallback(tune.Callback):
    """Writes each trial's row when it completes, or when it errors (its reason kept)."""

    def __init__(self, results: str, scenario) -> None:
        self.results, self.scenario = results, scenario

    def _row(
        self, trial, result: dict[str, Any], status: str | None = None, error: str = ""
    ) -> dict:
        row = _config_row(trial.config)
        row |= {k: result.get(k) for k in RESULT_KEYS}
        if row.get("diverged_step") == -1:
            row["diverged_step"] = None
        row["epochs"] = row["epochs"] or self.scenario.align.epochs
        return row | {
            "trial_id": trial.trial_id,
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "status": status or result.get("status", "failed"),
            "error": error or result.get("error", ""),
        }

    def _write(self, trial, row: dict) -> None:
        write_row(self.results, self.scenario.name, row)
        # Recorded here, in the sweep's driver, which outlives every trial's processes.
        tags = {"scenario": self.scenario.name, "method": str(row["method"])}
        record_trial(tags | {"trial": trial_name(trial.config, trial.trial_id)}, row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get(REUSED):
            return  # its row is in the store already, as it was written
        self._write(trial, self._row(trial, trial.last_result or {}))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(
            trial, self._row(trial, trial.last_result or {}, "failed", _error_reason(trial))
        )


def _config_row(config: dict[str, Any]) -> dict[str, Any]:
    """The row's config columns: exactly what the loss ran with (defaults resolved); a
    config the loss refused is kept as given (its trial failed with the reason)."""
    try:
        return AlignConfig.from_config(config).as_dict()
    except (KeyError, TypeError, ValueError):
        return {k: config.get(k) for k in CONFIG_KEYS}


def _error_reason(trial) -> str:
    """The exception's last line from Tune's error file (the row should say why, not where),
    with the file's path for the full traceback."""
    path = getattr(trial, "error_file", None)
    if not path:
        return "trial driver crashed"
    try:
        lines = [ln for ln in open(path, encoding="utf-8").read().splitlines() if ln.strip()]
    except OSError:
        return f"trial driver crashed (traceback: {path})"
    return f"{lines[-1].strip() if lines else 'trial driver crashed'} (traceback: {path})"


def check_reference_init(record: dict[str, Any], init: str, settings, root: str) -> None:
    """A setup's starting policy must be the registered reference's kind: a base-initialized
    sweep (paper §4.1) started from an SFT checkpoint would measure something else."""
    registered = record.get("init", "sft")
    if init == "base" and registered != "base":
        raise SystemExit(
            f"raydaa search --setup {settings.setup} starts from the base model, but the "
            f"reference registered in {root}/reference.json is an SFT checkpoint; use another "
            "--results directory for base-initialized sweeps, or `raydaa study rq1`, which "
            "keeps one namespace per initialization"
        )
    if init == "sft" and registered == "base":
        print(
            f"note: the reference registered in {root}/reference.json is the base model "
            "(registered with `raydaa sft --base`); this two-stage sweep aligns from it",
            flush=True,
        )


@dataclass
class SearchSettings:
    method: str
    scenario: str = "tiny"
    mode: str = "grid"
    """grid: the exact paper grid; optuna: TPE over the same values."""
    num_trials: int | None = None
    """Optuna trials (default: half the grid); ignored by grid."""
    seed: int = 0
    setup: str = "two_stage"
    multi_objective: bool = False
    """Optuna on (quality max, KL min): the sweep aims at the Pareto front."""
    results: str = DEFAULT_RESULTS
    """Directory (local, NFS/EFS) or s3:// / gs:// URI, seen by every node."""
    optuna_storage: str | None = None
    storage: str | None = None
    """Ray Tune storage path (local dir, s3://, NFS); default <results>/<scenario>/tune."""
    resume: bool = False
    max_concurrent_trials: int | None = None
    """Trials at once; default: what the cluster's free resources fit now (on an
    autoscaling cluster give the size it scales to: its nodes are not there yet)."""


def concurrency(scenario) -> int:
    """Trials that fit the cluster's free resources at once (at least 1)."""
    import ray

    res = scenario.resources
    free = ray.available_resources()
    fits = int(free.get("CPU", 1) // (res.num_workers * res.cpus_per_worker))
    if res.use_gpu:
        fits = min(fits, int(free.get("GPU", 0) // res.num_workers))
    return max(1, fits)


def run_search(settings: SearchSettings) -> dict[str, Any]:
    """Prepare what trials share, then run (or resume) the sweep; returns where things are."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # Ray's newer console output picks its own metric columns and ignores the reporter
    # below; the classic table shows exactly β, lr, λ, status, quality and KL.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space
    from raydaa.core.losses import get_spec
    from raydaa.train.stages import prepare_alignment, reference_record, run_sft

    scenario = load_scenario(settings.scenario)
    space = load_method_space(settings.method, scenario, setup=settings.setup)
    results = storage.resolve(settings.results)
    root = scenario_root(results, scenario)
    if reference_record(results, scenario) is None:
        print(
            f"stage 1: {'registering the base model' if space.init == 'base' else 'training SFT'} "
            f"as the reference of {scenario.name} (once per scenario) ...",
            flush=True,
        )
        record = run_sft(scenario, results=results, base_init=space.init == "base")
        print(f"stage 1: reference at {record['path']}", flush=True)
    check_reference_init(reference_record(results, scenario), space.init, settings, root)
    print(
        f"preparing preference data and the reference cache for {space.size} trials ...", flush=True
    )
    shared = prepare_alignment(
        scenario, results=results, needs_reference=get_spec(settings.method).needs_reference
    )

    name = f"{settings.method}-{settings.setup}-{settings.mode}"
    storage_path = settings.storage or storage.join(root, "tune")
    trainable = tune.with_resources(
        tune.with_parameters(trial_driver, scenario=scenario, shared=shared, results=results),
        # The driver only waits on its TorchTrainer, whose workers hold the CPUs/GPUs; Tune
        # needs a non-empty request, so it asks for a little memory and no CPU.
        {"CPU": 0, "memory": 256 * 2**20},
    )
    study_name = f"{scenario.name}-{settings.method}-{settings.setup}"
    # SQLite needs a filesystem: with object-store results the study needs its own URL.
    optuna_url = settings.optuna_storage or (
        None if storage.is_uri(results) else f"sqlite:///{root}/optuna.db"
    )
    reporter = tune.CLIReporter(
        parameter_columns={"beta": "β", "lr": "lr", "lambda_": "λ"},
        metric_columns={"status": "status", "quality": "quality", "kl": "KL"},
        max_report_frequency=30,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=1),
        # In this order: the report refresh reads the row the store callback just wrote.
        callbacks=[
            ResultsStoreCallback(results, scenario),
            ReportRefreshCallback(results, scenario.name),
        ],
    )
    path = f"{storage_path.rstrip('/')}/{name}"
    resume = settings.resume and tune.Tuner.can_restore(path)
    if settings.resume and not resume:
        # interrupted before its first trial (stage 1, the reference cache): start it now
        print(f"no sweep saved at {path} yet: starting it", flush=True)
    if resume:
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        at_once = settings.max_concurrent_trials or concurrency(scenario)
        names = {"trial_name_creator": _trial_name, "trial_dirname_creator": _trial_name}
        if settings.mode == "grid":
            tune_config = tune.TuneConfig(max_concurrent_trials=at_once, **names)
            param_space = space.tune_grid_space()
        elif settings.mode == "optuna":
            if optuna_url is None:
                raise ValueError(
                    f"--results {results} is an object store, where Optuna's SQLite study "
                    "cannot live: pass --optuna-storage (e.g. sqlite:////mnt/shared/optuna.db "
                    "or postgresql://...)"
                )
            metric, mode = (
                ("quality", "max")
                if not settings.multi_objective
                else (["quality", "kl"], ["max", "min"])
            )
            searcher = OptunaSearch(
                space.optuna_space(),
                metric=metric,
                mode=mode,
                study_name=study_name,
                seed=settings.seed,
                storage=optuna.storages.RDBStorage(optuna_url),
            )
            tune_config = tune.TuneConfig(
                search_alg=searcher,
                num_samples=settings.num_trials or max(1, space.size // 2),
                max_concurrent_trials=at_once,
                **names,
            )
            param_space = space.fixed()
        else:
            raise ValueError(f"unknown mode {settings.mode!r}; expected grid or optuna")
        tuner = tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
        )
    grid = tuner.fit()
    expected = space.size if settings.mode == "grid" else (
        settings.num_trials or max(1, space.size // 2))
    # Tune returns normally after a Ctrl-C; every trial that ended reported a status
    ended = sum(1 for r in grid if r.error is not None or (r.metrics or {}).get("status"))
    return {
        "interrupted": ended < expected,
        "trials_ended": f"{ended} of {expected}",
        "scenario": scenario.name,
        "method": settings.method,
        "results_store": store_root(results, scenario.name),
        "tune_experiment": path,
        "optuna_storage": optuna_url if settings.mode == "optuna" else None,
        "optuna_study": study_name if settings.mode == "optuna" else None,
    }
