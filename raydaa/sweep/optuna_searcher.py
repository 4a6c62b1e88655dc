"""Ray Tune's OptunaSearch, with failed and diverged trials told to the study as FAIL.

Ray's searcher hands a trial's metric to `study.tell` as it is; Optuna refuses a NaN value
(a diverged or failed trial reports quality NaN), Ray logs a warning and the trial stays
RUNNING in the stored study forever: optuna-dashboard then shows trials that never end,
and the sampler keeps treating them as in flight. No Ray option changes that, so this one
method is overridden.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from raydaa.sweep.telemetry import finite_number


class StudyRecordingOptunaSearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if result and not all(finite_number(result.get(m)) for m in metrics):
            result, error = None, True  # no value: Ray's searcher tells it as FAIL
        super().on_trial_complete(trial_id, result, error)
