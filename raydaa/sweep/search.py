"""`raydaa search`: Ray Tune (grid or Optuna) over one method's space in one scenario.

    shared once    reference policy (SFT), tokenized preference data, reference cache
    per trial      trial.trial_driver: one Ray Train TorchTrainer (named like the trial,
                   `dpo-b0.1-lr1e-06-<trial id>`), then evaluation (quality, KL)
                   -> tune.report; live raydaa_* metrics (telemetry.py)
    per result     callbacks.ResultsStoreCallback: one row per trial in the results store;
                   and the callbacks the command hands in (the report refresh)

The Tuner itself is built by tuner.py, as for `raydaa study`.
`results` is a storage path every node sees (raydaa/io/storage.py): a directory (local, or
NFS/EFS on a cluster) or s3:// / gs://. Trials receive only storage paths.

The Optuna study lives in SQLite under the results directory (or any `--optuna-storage`
URL), named `<scenario>-<method>-<setup>` (plus `-continuous` and the objective when they
are not the defaults), so `optuna-dashboard sqlite:///...` opens it; its searcher, warm
start and sampler are raydaa.sweep.optuna_sweep's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune

from raydaa.config.defaults import DEFAULT_RESULTS, DEFAULT_SCENARIO
from raydaa.core.methods import METHOD_SPECS
from raydaa.io import storage
from raydaa.io.results_store import store_root
from raydaa.sweep.capacity import concurrency
from raydaa.sweep.tuner import (
    reuse_drivers,
    sweep_run_config,
    sweep_trainable,
    sweep_tune_config,
)
from raydaa.train.stages import scenario_root


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
    scenario: str = DEFAULT_SCENARIO
    mode: str = "grid"
    """grid: the exact paper grid; optuna: Optuna (TPE or GP) over the grid's values or
    the box they span (`space`)."""
    num_trials: int | None = None
    """Optuna trials (default: half the grid); ignored by grid."""
    seed: int = 0
    setup: str = "two_stage"
    multi_objective: bool = False
    """Optuna on (quality max, KL min): the sweep aims at the Pareto front (the older
    spelling of objective="pareto")."""
    space: str = "grid"
    """Optuna's space: grid (categorical over the grid's values) or continuous (log-uniform
    within the grid's bounds); raydaa.config.optuna_space."""
    sampler: str = "tpe"
    """Optuna's sampler: tpe or gp (raydaa.sweep.optuna_study)."""
    objective: str = "quality"
    """quality, quality-at-kl:K or pareto (raydaa.config.objective)."""
    warm_start: bool = True
    """A new Optuna study starts with the store's rows of this space (raydaa.sweep.warm_start)."""
    results: str = DEFAULT_RESULTS
    """Directory (local, NFS/EFS) or s3:// / gs:// URI, seen by every node."""
    optuna_storage: str | None = None
    storage: str | None = None
    """Ray Tune storage path (local dir, s3://, NFS); default <results>/<scenario>/tune."""
    resume: bool = False
    max_concurrent_trials: int | None = None
    """Trials at once; default: what the cluster's total resources hold, or what an
    autoscaling cluster started with `ray up` can grow to (raydaa.sweep.capacity)."""
    scheduler: str = "none"
    """none, asha or hyperband: stop weak trials on their intermediate evaluations
    (raydaa.sweep.schedulers; the scenario must set intermediate_eval.eval_every)."""
    log_to: tuple[str, ...] = ("tensorboard",)
    """Where every trial's training curves go: tensorboard, mlflow, wandb (any of them,
    or none); raydaa.sweep.curve_loggers."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in the results dir)."""
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else raydaa-<scenario>)."""


def run_search(settings: SearchSettings, callbacks: Sequence[tune.Callback] = ()) -> dict[str, Any]:
    """Prepare what trials share, then run (or resume) the sweep; returns where things are.
    `callbacks` run after each trial's row is written (the command hands in the report
    refresh)."""
    from raydaa.sweep import optuna_sweep

    # Ray's newer console output picks its own metric columns and ignores the reporter
    # below; the classic table shows exactly β, lr, λ, status, quality and KL.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space
    from raydaa.train.stages import prepare_alignment, reference_record, run_sft

    scenario = load_scenario(settings.scenario)
    from raydaa.sweep.schedulers import SchedulerError, scheduler_problem

    if problem := scheduler_problem(settings.scheduler, scenario):  # before any compute
        raise SchedulerError(problem)
    space = load_method_space(settings.method, scenario, setup=settings.setup)
    results = storage.resolve(settings.results)
    root = scenario_root(results, scenario)
    from raydaa.data.preflight import ALL_SOURCES, preflight

    # sources, formats and validation prompts, before stage 1 or anything else is computed
    preflight(scenario, ("preference", "validation") if space.init == "base" else ALL_SOURCES)
    from raydaa.sweep.curve_loggers.settings import prepare_curves

    # the tracking destinations (an MLflow experiment) before any compute
    curves = prepare_curves(tuple(settings.log_to), results=results, scenario=scenario.name,
                            mlflow_uri=settings.mlflow_uri, wandb_project=settings.wandb_project)
    print(f"training curves: {curves.describe()}", flush=True)
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
    inputs = prepare_alignment(
        scenario, results=results, needs_reference=METHOD_SPECS[settings.method].needs_reference
    )

    name = f"{settings.method}-{settings.setup}-{settings.mode}"
    study_name = optuna_sweep.sweep_study_name(settings, scenario.name)
    if settings.mode == "optuna":  # one Tune experiment per study
        name += study_name.removeprefix(f"{scenario.name}-{settings.method}-{settings.setup}")
    storage_path = settings.storage or storage.join(root, "tune")
    scheduler_name = None if settings.scheduler == "none" else settings.scheduler
    reused = reuse_drivers(scheduler_name)["reuse_actors"]  # for the name drivers show
    trainable = sweep_trainable(scenario, inputs, results, curves, reused=reused)
    # SQLite needs a filesystem: with object-store results the study needs its own URL.
    optuna_url = settings.optuna_storage or (
        None if storage.is_uri(results) else f"sqlite:///{root}/optuna.db"
    )
    run_config = sweep_run_config(name, storage_path, results, scenario, callbacks=callbacks,
                                  scheduler=scheduler_name)
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
        at_once = sweep_concurrency(settings, scenario, space, inputs.rows)
        shared = sweep_tune_config(sweep_scheduler(settings, scenario, space, inputs.rows))
        if settings.mode == "grid":
            tune_config = tune.TuneConfig(max_concurrent_trials=at_once, **shared)
            param_space = space.tune_grid_space()
        elif settings.mode == "optuna":
            if optuna_url is None:
                raise ValueError(
                    f"--results {results} is an object store, where Optuna's SQLite study "
                    "cannot live: pass --optuna-storage (e.g. sqlite:////mnt/shared/optuna.db "
                    "or postgresql://...)"
                )
            from raydaa.io.results_store import read_store

            searcher = optuna_sweep.searcher(
                settings, space, scenario.name, optuna_url,
                read_store(results, scenario.name, settings.method).to_pylist(),
                reference_record(results, scenario)["path"],
            )  # fmt: skip
            tune_config = tune.TuneConfig(
                search_alg=searcher,
                num_samples=optuna_sweep.num_samples(settings, space),
                max_concurrent_trials=at_once,
                **shared,
            )
            param_space = space.fixed()
        else:
            raise ValueError(f"unknown mode {settings.mode!r}; expected grid or optuna")
        tuner = tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
        )
    print(watch_lines(path, curves.backends), flush=True)
    grid = tuner.fit()
    expected = space.size if settings.mode == "grid" else optuna_sweep.trials_expected(
        settings, space, optuna_url, scenario.name, created=len(grid))
    # Tune returns normally after a Ctrl-C; every trial that ended reported a status
    ended = sum(1 for r in grid if r.error is not None
                or trial_ended(r.metrics, results, scenario.name, settings.method))
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


def watch_lines(experiment: str, backends: tuple[str, ...]) -> str:
    """Where to watch the sweep while it runs (docs/watching.md), printed as it starts."""
    lines = ["watch it: raydaa dashboard  (live panels of every trial: Prometheus, Grafana)"]
    if "tensorboard" in backends:
        lines.append(f"          tensorboard --logdir {experiment}  (training curves)")
    return "\n".join(lines)


def sweep_scheduler(settings: SearchSettings, scenario, space, rows: int):
    """The Tune scheduler of `--scheduler` (None for none), its max_t the longest trial's
    steps over the space's epochs."""
    from raydaa.sweep.schedulers import build_scheduler

    return build_scheduler(settings.scheduler, scenario, longest_trial(scenario, space, rows))


def longest_trial(scenario, space, rows: int) -> int:
    from raydaa.sweep.schedulers import longest_run
    from raydaa.train.stages import recipe_steps

    epochs = {c.get("epochs") for c in space.grid()}
    return longest_run(lambda e: recipe_steps(scenario.align, rows, e), epochs)


def sweep_concurrency(settings: SearchSettings, scenario, space, rows: int) -> int:
    """Trials Tune keeps at once: `--max-concurrent-trials`, or what the cluster holds
    (raydaa.sweep.capacity), or under hyperband every trial when their drivers hold their
    CPUs (raydaa.sweep.schedulers.trials_at_once); says when hyperband can stop none."""
    from raydaa.sweep import optuna_sweep
    from raydaa.sweep.schedulers import hyperband_warning, trials_at_once
    from raydaa.train.in_process import trains_in_process

    trials = space.size if settings.mode == "grid" else optuna_sweep.num_samples(settings, space)
    at_once = settings.max_concurrent_trials or trials_at_once(
        settings.scheduler, concurrency(scenario), trials,
        drivers_hold_resources=trains_in_process(scenario.resources))
    if settings.scheduler == "hyperband":
        note = hyperband_warning(trials, at_once, longest_trial(scenario, space, rows),
                                 scenario.early_stopping.reduction_factor)
        if note:
            print(note, flush=True)
    return at_once


def trial_ended(metrics: dict | None, results: str, scenario: str, method: str) -> bool:
    """A trial of the sweep ended (was not interrupted): its last result is a final one,
    or its row says the scheduler pruned it."""
    from raydaa.io.results_store import read_row
    from raydaa.sweep.pruning import RUNNING, has_ended

    metrics = metrics or {}
    row = None
    if metrics.get("status") == RUNNING and metrics.get("trial_id"):
        row = read_row(results, scenario, method, str(metrics["trial_id"]))
    return has_ended(metrics, row and row["status"])
