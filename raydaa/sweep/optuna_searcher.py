"""Ray Tune's OptunaSearch, made to keep a study that tells the sweep's story and never
runs one configuration twice.

Ray's searcher, as installed, hands a trial's metric to `study.tell` as it is: Optuna
refuses a NaN value (a diverged or failed trial reports quality NaN), Ray logs a warning,
and the trial stays RUNNING in the stored study forever, which optuna-dashboard then
shows as never ending and the sampler treats as in flight. It also reports every result
as an intermediate value at Tune's iteration count, records nothing else about a trial,
and asks the sampler once per trial, repeats included. Three methods are overridden:

    suggest             no repeats; FINISHED once a grid is exhausted (raydaa.sweep.no_repeat)
    on_trial_result     intermediate (quality, step) results only (raydaa.sweep.study_record)
    on_trial_complete   state, values, constraint and user attributes (the same module)

Ray's own bookkeeping (`_ot_study`, `_ot_trials`, `_completed_trials`, save/restore) is
used as it is: a resumed sweep restores this searcher whole.
"""

from __future__ import annotations

import random
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raydaa.config.objective import Objective
from raydaa.config.optuna_space import grid_size
from raydaa.sweep import no_repeat
from raydaa.sweep.study_record import record, report_intermediate


class StudyRecordingOptunaSearch(OptunaSearch):
    """OptunaSearch over a dict of Optuna distributions. `objective` (default: quality,
    or pareto when `metric` is a list) sets metric and mode; `fixed` are the config keys
    Tune's param_space adds to each suggestion (the trial's name needs them when Tune
    reports no result); `max_asks` bounds the sampler's answers per suggestion."""

    def __init__(
        self,
        space: dict[str, Any],
        *,
        objective: Objective | None = None,
        fixed: dict[str, Any] | None = None,
        max_asks: int = no_repeat.MAX_ASKS,
        seed: int | None = None,
        sampler=None,
        **kwargs,
    ) -> None:
        if objective is None:
            objective = Objective("pareto" if isinstance(kwargs.get("metric"), list) else "quality")
        kwargs.setdefault("metric", objective.metric)
        kwargs.setdefault("mode", objective.mode)
        # Ray ignores `seed` next to a sampler (and warns): the sampler carries it
        super().__init__(space, seed=None if sampler is not None else seed, sampler=sampler, **kwargs)
        self.objective = objective
        self.fixed = dict(fixed or {})
        self.max_asks = max_asks
        self._rng = random.Random(seed)
        self._configs: dict[str, dict[str, Any]] = {}

    # -- suggestions -----------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | str | None:
        if trial_id in self._ot_trials or not isinstance(self._space, dict):
            return super().suggest(trial_id)  # a restored trial asks again; define-by-run
        study = self._ot_study
        if no_repeat.exhausted(study, self._space):
            print(f"Optuna: all {grid_size(self._space)} configurations of the grid are in study "
                  f"{study.study_name}: no new trial", flush=True)  # fmt: skip
            return Searcher.FINISHED
        for _ in range(self.max_asks):
            config = super().suggest(trial_id)
            trial = self._ot_trials[trial_id]
            twin = no_repeat.twin_of(study, trial.number, trial.params)
            if twin is None:
                return self._started(trial_id, trial, config)
            no_repeat.tell_duplicate(study, trial, twin)
            del self._ot_trials[trial_id]
        if no_repeat.enqueue_untried(study, self._space, self._rng):
            config = super().suggest(trial_id)
            return self._started(trial_id, self._ot_trials[trial_id], config)
        print(f"Optuna: the sampler proposed only tried configurations {self.max_asks} times "
              f"running and the space lists no untried point: no new trial", flush=True)  # fmt: skip
        return Searcher.FINISHED

    def _started(self, trial_id: str, trial, config: dict) -> dict:
        trial.set_user_attr("trial_id", trial_id)  # a trial killed mid-run is still traceable
        self._configs[trial_id] = {**self.fixed, **config}
        return config

    # -- results ---------------------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        report_intermediate(self._ot_study, self._ot_trials[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        record(self._ot_study, self._ot_trials[trial_id], trial_id, result, error, self.objective,
               config=self._configs.get(trial_id))  # fmt: skip
        self._completed_trials.add(trial_id)
