"""A trial's curve logger: a Ray Train UserCallback that puts every training report on
the chosen backends as it comes, and the driver's last call, which adds the final
evaluation and closes them.

    backend       steps of a run trained in the     steps of a Ray Train run (2+ workers,
                  trial's driver (1 CPU worker)     GPUs: callbacks run in its controller)
    tensorboard   live (driver)                     live (controller, on the driver's node)
    mlflow        live (driver)                     live (controller, by run id)
    wandb         live (driver)                     at the run's end, from its history

The final quality, KL and status come from the driver after the evaluation, for all.
A backend that fails is reported once on the trial's log and left out: curves never fail
a trial.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import ray.train

from raydaa.sweep.curve_loggers.points import (
    final_points,
    hyperparameters,
    report_step,
    step_points,
)
from raydaa.sweep.curve_loggers.settings import CurveSettings


class CurveLogger(ray.train.UserCallback):
    def __init__(self, sinks: list[Any], hparams: dict[str, Any]) -> None:
        self.sinks, self.hparams = list(sinks), dict(hparams)

    def _call(self, sink: Any, what: str, *args: Any) -> None:
        try:
            getattr(sink, what)(*args)
        except Exception:  # noqa: BLE001 - a tracking backend down is not a failed trial
            print(f"raydaa: {sink.name} curves stopped ({what}):\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
            self.sinks = [s for s in self.sinks if s is not sink]

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        step = report_step(metrics[0]) if metrics else None
        if step is None:
            return
        points = step_points(metrics[0])
        for sink in list(self.sinks):
            if sink.live_anywhere or sink.live_here():
                self._call(sink, "log", step, points)

    def finish(self, history: list[dict[str, Any]], result: dict[str, Any]) -> None:
        """In the driver, once the trial's result is known: steps its backends could not
        log live (a Ray Train run's, for W&B) from `history`, then the final points."""
        steps = [(s, step_points(r)) for r in history if (s := report_step(r)) is not None]
        step = int(result.get("step") or (steps[-1][0] if steps else 0))
        final = final_points(result)
        for sink in list(self.sinks):
            if not sink.live_anywhere:
                self._call(sink, "catch_up", steps)
            self._call(sink, "finish", step, final, self.hparams, result)


def open_curves(settings: CurveSettings | None, config: dict[str, Any], *, trial: str,
                trial_id: str, scenario: str) -> CurveLogger:
    """In the trial's driver, before its run: open a run on each backend of `settings`
    (None: TensorBoard alone, what a sweep without `--log-to` gets)."""
    settings = settings or CurveSettings()
    hparams = hyperparameters(config)
    tags = {"scenario": scenario, "method": str(config.get("method"))}
    logger = CurveLogger([], hparams)
    for backend in settings.backends:
        try:
            sink = _open(backend, settings, trial=trial, trial_id=trial_id,
                         scenario=scenario, hparams=hparams, tags=tags)
            if sink is not None:
                logger.sinks.append(sink)
        except Exception:  # noqa: BLE001 - the trial trains without that backend
            print(f"raydaa: no {backend} curves for {trial}:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
    return logger


def _open(backend: str, settings: CurveSettings, **trial: Any) -> Any:
    if backend == "tensorboard":  # None outside a Tune trial: no trial directory
        from raydaa.sweep.curve_loggers.tensorboard import TensorBoardCurves, trial_logdir

        where = trial_logdir()
        return None if where is None else TensorBoardCurves(*where)
    if backend == "mlflow":
        from raydaa.sweep.curve_loggers.mlflow_run import MLflowCurves

        return MLflowCurves.open(settings, **trial)
    if backend == "wandb":
        from raydaa.sweep.curve_loggers.wandb_run import WandbCurves

        return WandbCurves.open(settings, **trial)
    raise ValueError(f"unknown curve backend {backend!r}")
