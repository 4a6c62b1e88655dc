"""A study's trials on Ray: the same trial driver, store and report callbacks as
`raydaa search`, over an explicit list of configurations.

A study sweep is not always a product grid (what is left of one after an interruption, or
one best configuration per method for RQ4), so each sweep is one Tune run whose trials
are exactly its configurations: `BasicVariantGenerator(points_to_evaluate=configs)` with
one sample per configuration. Trials of a sweep share the namespace's reference, data and
reference cache, prepared once, and run as many at a time as the cluster holds (raydaa.sweep.capacity).
"""

from __future__ import annotations

import os
import time
from typing import Any

from raydaa.io import storage


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
        from raydaa.sweep.trial import evaluate_trial

        if scenario.resources.use_gpu:
            self._connect()
        return evaluate_trial(record["path"], record["path"], scenario)

    def run_configs(self, scenario, results: str, configs: list[dict], name: str) -> None:
        # the classic progress table (β, lr, λ, status, quality, KL), as raydaa search shows
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        from ray import tune

        from raydaa.core.methods import METHOD_SPECS
        from raydaa.sweep.capacity import concurrency
        from raydaa.sweep.report_refresh import ReportRefreshCallback
        from raydaa.sweep.tuner import (
            points_sweep,
            sweep_run_config,
            sweep_trainable,
            tune_trial_name,
        )
        from raydaa.train.stages import prepare_alignment

        self._connect()
        inputs = prepare_alignment(
            scenario,
            results=results,
            needs_reference=any(METHOD_SPECS[c["method"]].needs_reference for c in configs),
        )
        trainable = sweep_trainable(scenario, inputs, results)
        param_space, tune_config = points_sweep(
            configs, self.max_concurrent_trials or concurrency(scenario), tune_trial_name
        )
        run_config = sweep_run_config(
            f"study-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage.join(results, scenario.name, "tune"),
            results,
            scenario,
            callbacks=[ReportRefreshCallback(results, scenario.name)],
            method_column=True,
        )
        tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
        ).fit()
