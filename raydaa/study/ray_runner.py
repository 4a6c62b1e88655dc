"""A study's trials on Ray: the same trial driver, store and report callbacks as
`raydaa search`, over an explicit list of configurations.

A study sweep is not always a product grid (what is left of one after an interruption, or
one best configuration per method for RQ4), so each sweep is one Tune run whose trials
are exactly its configurations: `BasicVariantGenerator(points_to_evaluate=configs)` with
one sample per configuration. Trials of a sweep share the namespace's reference, data and
reference cache, prepared once, and run as many at a time as the free resources fit.
"""

from __future__ import annotations

import os
import time
from typing import Any

from raydaa.io import storage


def _trial_name(trial) -> str:
    from raydaa.sweep.telemetry import trial_name

    return trial_name(trial.config, trial.trial_id)


def points_sweep(configs: list[dict], at_once: int, name_creator=None):
    """(param_space, TuneConfig) whose trials are exactly `configs`, at most `at_once`
    running. The limit goes to the generator itself: Tune ignores TuneConfig's
    max_concurrent_trials next to a BasicVariantGenerator (it only warns); a 24-trial sweep
    then started every trial at once and ran a 24 GiB node out of memory."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Every key a choice over the values the points use: each point is a valid preset.
    keys = sorted({k for c in configs for k in c})
    param_space = {k: tune.choice(list(dict.fromkeys(c.get(k) for c in configs))) for k in keys}
    names = {"trial_name_creator": name_creator, "trial_dirname_creator": name_creator}
    tune_config = tune.TuneConfig(
        search_alg=BasicVariantGenerator(
            points_to_evaluate=[dict(c) for c in configs], max_concurrent=at_once
        ),
        num_samples=len(configs),
        **(names if name_creator else {}),
    )
    return param_space, tune_config


class RayRunner:
    """Joins Ray (`address`, $RAY_ADDRESS, or a local Ray) only when something runs, so a
    study whose sweeps are all in the store only reads it."""

    def __init__(self, address: str | None = None, max_concurrent_trials: int | None = None):
        self.address, self.max_concurrent_trials = address, max_concurrent_trials

    def _connect(self) -> None:
        from raydaa.io.ray_connection import connect_ray

        connect_ray(self.address)

    def train_reference(self, scenario, results: str, *, init: str, fraction: float | None):
        from raydaa.train.stages import run_sft

        self._connect()
        return run_sft(
            scenario, results=results, fraction=fraction or 1.0, base_init=init == "base"
        )

    def evaluate_reference(self, scenario, record: dict[str, Any]) -> dict[str, Any]:
        """The reference judged as a policy of its own (KL 0 by construction), as a trial's
        policy is: here on CPU scenarios, as a one-GPU Ray task on GPU ones."""
        from raydaa.sweep.search import evaluate_trial

        if scenario.resources.use_gpu:
            self._connect()
        return evaluate_trial(record["path"], record["path"], scenario)

    def run_configs(self, scenario, results: str, configs: list[dict], name: str) -> None:
        # the classic progress table (β, lr, λ, status, quality, KL), as raydaa search shows
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        from ray import tune

        from raydaa.core.losses import get_spec
        from raydaa.sweep.report_refresh import ReportRefreshCallback
        from raydaa.sweep.search import ResultsStoreCallback, concurrency, trial_driver
        from raydaa.train.stages import prepare_alignment

        self._connect()
        shared = prepare_alignment(
            scenario,
            results=results,
            needs_reference=any(get_spec(c["method"]).needs_reference for c in configs),
        )
        trainable = tune.with_resources(
            tune.with_parameters(trial_driver, scenario=scenario, shared=shared, results=results),
            {"CPU": 0, "memory": 256 * 2**20},  # as raydaa search: the Train workers hold the CPUs
        )
        param_space, tune_config = points_sweep(
            configs, self.max_concurrent_trials or concurrency(scenario), _trial_name
        )
        run_config = tune.RunConfig(
            name=f"study-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage.join(results, scenario.name, "tune"),
            progress_reporter=tune.CLIReporter(
                parameter_columns={"method": "method", "beta": "β", "lr": "lr", "lambda_": "λ"},
                metric_columns={"status": "status", "quality": "quality", "kl": "KL"},
                max_report_frequency=30,
            ),
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[
                ResultsStoreCallback(results, scenario),
                ReportRefreshCallback(results, scenario.name),
            ],
        )
        tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
        ).fit()
