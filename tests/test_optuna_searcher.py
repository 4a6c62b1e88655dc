"""A trial whose metric is NaN (diverged or failed) ends in the Optuna study as FAIL; a
finite one as COMPLETE with its value. Ray's own OptunaSearch leaves the NaN one RUNNING."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from ray.tune.search.optuna import OptunaSearch

from raydaa.sweep.optuna_searcher import StudyRecordingOptunaSearch

SPACE = {"beta": CategoricalDistribution([0.1, 0.5]), "lr": CategoricalDistribution([1e-4, 1e10])}


def told_states(searcher_class, metric, mode, results):
    storage = optuna.storages.InMemoryStorage()
    searcher = searcher_class(SPACE, metric=metric, mode=mode, study_name="s", seed=0,
                              storage=storage)
    for index, result in enumerate(results):
        searcher.suggest(f"t{index}")
        searcher.on_trial_complete(f"t{index}", result)
    study = optuna.load_study(study_name="s", storage=storage)
    return [(t.state.name, t.values) for t in study.trials]


@pytest.mark.parametrize(
    "metric, mode, results, wanted",
    [
        ("quality", "max", [{"quality": math.nan}, {"quality": 0.6}],
         [("FAIL", None), ("COMPLETE", [0.6])]),
        (["quality", "kl"], ["max", "min"],
         [{"quality": 0.6, "kl": math.nan}, {"quality": 0.6, "kl": 0.2}, None],
         [("FAIL", None), ("COMPLETE", [0.6, 0.2]), ("PRUNED", None)]),
    ],
)
def test_nan_metrics_are_told_as_failures(metric, mode, results, wanted):
    assert told_states(StudyRecordingOptunaSearch, metric, mode, results) == wanted


def test_rays_own_searcher_leaves_them_running():
    """Why the subclass exists: the behaviour it corrects, on the Ray this was built with."""
    states = told_states(OptunaSearch, "quality", "max", [{"quality": math.nan}])
    assert states == [("RUNNING", None)]
