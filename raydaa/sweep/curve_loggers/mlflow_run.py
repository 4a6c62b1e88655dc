"""MLflow: one run per trial, named like the trial, in the sweep's experiment
(`raydaa-<scenario>`), its configuration as parameters.

Ray's `setup_mlflow` opens the run in the trial's driver (tracking URI, experiment,
parameters). Ray's MLflowLoggerCallback is not used: it logs Tune results only, from the
sweep's process. The points go by run id through an `MlflowClient`, so they are live in
whichever process runs the callback (the driver, or a Ray Train run's controller); the
driver logs the final evaluation and ends the run.
"""

from __future__ import annotations

import time
from typing import Any

from raydaa.sweep.curve_loggers.settings import CurveSettings


class MLflowCurves:
    name = "mlflow"
    live_anywhere = True

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self._client = None

    @classmethod
    def open(cls, settings: CurveSettings, *, trial: str, trial_id: str, scenario: str,
             hparams: dict[str, Any], tags: dict[str, str]) -> MLflowCurves:
        import mlflow
        from ray.air.integrations.mlflow import setup_mlflow

        if mlflow.active_run() is not None:  # a reused driver's previous trial, cut short
            mlflow.end_run(status="KILLED")
        setup_mlflow(hparams, tracking_uri=settings.mlflow_uri,
                     experiment_id=settings.mlflow_experiment_id, run_name=trial,
                     tags={"trial_id": trial_id, "scenario": scenario, **tags})
        return cls(settings.mlflow_uri, mlflow.active_run().info.run_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def log(self, step: int, points: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client().log_batch(
            self.run_id, metrics=[Metric(tag, value, now, step) for tag, value in points.items()])

    def finish(self, step: int, final: dict[str, float], hparams: dict[str, Any],
               result: dict[str, Any]) -> None:
        import mlflow

        self.log(step, final)
        client = self.client()
        client.set_tag(self.run_id, "status", str(result.get("status")))
        if result.get("error"):
            client.set_tag(self.run_id, "error", str(result["error"])[:5000])
        ended = "FINISHED" if result.get("status") == "finished" else "FAILED"
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=ended)
        else:
            client.set_terminated(self.run_id, status=ended)
