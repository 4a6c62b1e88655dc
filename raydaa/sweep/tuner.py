"""The one construction of a sweep's Tune pieces, for `raydaa search` and `raydaa study`:
the trainable (the trial driver with what trials share), the RunConfig (progress table,
failure policy, results-store callback first), trial names, and the explicit-points
search a study uses when its sweep is not a product grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray import tune

from raydaa.sweep.callbacks import ResultsStoreCallback
from raydaa.sweep.telemetry import SweepMetricsCallback, trial_name
from raydaa.sweep.trial import trial_driver
from raydaa.train.in_process import trains_in_process
from raydaa.train.stages import AlignmentInputs

# A driver whose run goes through Ray Train only waits on it (the run's workers hold the
# CPUs/GPUs); Tune needs a non-empty request, so it asks for a little memory and no CPU.
# A driver that trains its one-worker run itself (raydaa/train/in_process.py) holds its CPUs.
DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


def driver_resources(resources) -> dict[str, float]:
    """What a trial's driver asks Tune for, given the scenario's resources."""
    if trains_in_process(resources):
        return DRIVER_RESOURCES | {"CPU": float(resources.cpus_per_worker)}
    return DRIVER_RESOURCES


REUSED_DRIVER = "raydaa trial driver (reused: one trial after another)"


class NamedDriver:
    """Mixed into Tune's function trainable (its `__mixins__`). The Ray dashboard's Actors
    view shows an actor's repr, which Ray reads once, when the actor has started: a
    driver's is its trial's readable name, or what it is when Tune reuses it for trial
    after trial (reuse_drivers). Tune's own repr is the function's name, `trial_driver`."""

    reused = False

    def setup(self, config, *args, **kwargs):
        # ImplicitFunc.__repr__ returns self._name (a class attribute: shadowed here)
        self._name = REUSED_DRIVER if self.reused else trial_name(config, self.trial_id)
        return super().setup(config, *args, **kwargs)


class ReusedDriver(NamedDriver):
    reused = True  # a class of its own: workers import the mixins by name


def sweep_trainable(scenario, inputs: AlignmentInputs, results: str, curves=None,
                    reused: bool = True):
    """`curves`: where trials log their training curves (raydaa.sweep.curve_loggers
    CurveSettings; None: TensorBoard). `reused`: whether Tune reuses drivers (reuse_drivers),
    for the name a driver shows in the dashboard."""
    trainable = tune.with_resources(
        tune.with_parameters(trial_driver, scenario=scenario, inputs=inputs, results=results,
                             curves=curves),
        driver_resources(scenario.resources),
    )
    return named_drivers(trainable, reused)


def named_drivers(trainable, reused: bool):
    """`trainable` (a function for Tune) whose drivers carry a readable repr (NamedDriver)."""
    trainable.__mixins__ = (ReusedDriver if reused else NamedDriver,)
    return trainable


def tune_trial_name(trial) -> str:
    """`dpo-b0.1-lr1e-06-<trial id>`: the trial's name, its directory and its Train run."""
    return trial_name(trial.config, trial.trial_id)


def reuse_drivers(scheduler) -> dict[str, bool]:
    """TuneConfig's `reuse_actors`: a trial's driver process is kept for the next trial (a
    new one costs ~10 CPU-seconds of imports, Ray Train, torch and transformers, as much as
    a tiny trial's training), but only when no scheduler stops trials: Tune would keep a
    stopped trial's driver for reuse with its Train run still training."""
    return {"reuse_actors": scheduler is None}


def sweep_tune_config(scheduler) -> dict[str, Any]:
    """TuneConfig keywords every sweep shares: trials and their directories named
    readably, trial drivers reused where that is safe, and the scheduler."""
    return {"trial_name_creator": tune_trial_name, "trial_dirname_creator": tune_trial_name,
            "scheduler": scheduler, **reuse_drivers(scheduler)}


def sweep_run_config(
    name: str,
    storage_path: str,
    results: str,
    scenario,
    *,
    callbacks: Sequence[tune.Callback] = (),
    method_column: bool = False,
    scheduler: str | None = None,
) -> tune.RunConfig:
    """The results store writes each trial's row first; `callbacks` run after it, in order
    (the report refresh reads the row just written). `scheduler`: the name of the sweep's
    Tune scheduler (asha, hyperband), which a pruned trial's row names."""
    parameters = {"beta": "β", "lr": "lr", "lambda_": "λ"}
    reporter = tune.CLIReporter(
        parameter_columns={"method": "method", **parameters} if method_column else parameters,
        metric_columns={"status": "status", "quality": "quality", "kl": "KL"},
        max_report_frequency=30,
    )
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=1),
        # the sweep's live trial counts (raydaa_sweep_trials) right after the rows
        callbacks=[ResultsStoreCallback(results, scenario, scheduler),
                   SweepMetricsCallback(name, scenario.name), *callbacks],
    )


def points_sweep(configs: list[dict], at_once: int, name_creator=None):
    """(param_space, TuneConfig) whose trials are exactly `configs`, at most `at_once`
    running. The limit goes to the generator itself: Tune ignores TuneConfig's
    max_concurrent_trials next to a BasicVariantGenerator (it only warns); a 24-trial sweep
    then started every trial at once and ran a 24 GiB node out of memory."""
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
        **reuse_drivers(None),
    )
    return param_space, tune_config
