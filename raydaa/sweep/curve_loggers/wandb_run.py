"""Weights & Biases: one run per trial (id the Tune trial id, name the trial's, group the
Tune experiment), opened in the trial's driver by Ray's `setup_wandb` with the
configuration. Ray's WandbLoggerCallback is not used: it logs Tune results only.

A W&B run belongs to the process that opened it: its points are live when the run trains
in the driver (every one-worker CPU run); a Ray Train run's callbacks run in its controller,
another process, so its steps are logged from the run's history when it returns.
"""

from __future__ import annotations

import os
from typing import Any

from raydaa.sweep.curve_loggers.settings import CurveSettings


class WandbCurves:
    name = "wandb"
    live_anywhere = False

    def __init__(self, run: Any) -> None:
        self.run, self.pid, self.last_step = run, os.getpid(), 0

    @classmethod
    def open(cls, settings: CurveSettings, *, trial: str, trial_id: str, scenario: str,
             hparams: dict[str, Any], tags: dict[str, str]) -> WandbCurves:
        from ray.air.integrations.wandb import setup_wandb

        extra: dict[str, Any] = {}
        if settings.wandb_mode:  # the sweep's, also where setup_wandb looks for it
            os.environ["WANDB_MODE"] = extra["mode"] = settings.wandb_mode
        if settings.wandb_dir:
            os.makedirs(settings.wandb_dir, exist_ok=True)
            extra["dir"] = settings.wandb_dir
        run = setup_wandb(hparams, project=settings.wandb_project, trial_id=trial_id,
                          trial_name=trial, tags=list(dict.fromkeys(tags.values())), **extra)
        return cls(run)

    def __getstate__(self) -> dict[str, Any]:  # a copy in a Train controller logs nothing
        return {**self.__dict__, "run": None}

    def live_here(self) -> bool:
        return self.run is not None and os.getpid() == self.pid

    def log(self, step: int, points: dict[str, float]) -> None:
        if step > self.last_step:  # W&B drops a step below its last (a restarted run's)
            self.run.log(points, step=step)
            self.last_step = step

    def catch_up(self, history: list[tuple[int, dict[str, float]]]) -> None:
        for step, points in history:
            self.log(step, points)

    def finish(self, step: int, final: dict[str, float], hparams: dict[str, Any],
               result: dict[str, Any]) -> None:
        if final:
            self.run.log(final, step=max(step, self.last_step))
        self.run.summary.update({**{k.removeprefix("final/"): v for k, v in final.items()},
                                 "status": result.get("status"),
                                 "error": result.get("error") or ""})
        self.run.finish(exit_code=0 if result.get("status") == "finished" else 1)
