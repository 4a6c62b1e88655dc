"""StudyRecordingOptunaSearch in a real local Ray Tune run of a trivial function trainable
(no Ray Train, no DeepSpeed): one sweep of a 2×2 categorical grid asked for 10 trials,
one trial at a time, its study in SQLite, read back as optuna-dashboard reads it.

The trainable reports two intermediate results (status "running", quality and step) and
then its final one; the configuration STOPPED returns after its intermediate results,
which is what a trial a Tune scheduler stops mid-training leaves as its last result.
"""

import contextlib
import io
import sys

import optuna
import pytest
import ray
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from ray import tune

from raydaa.config.objective import Objective
from raydaa.sweep.no_repeat import DUPLICATE_OF
from raydaa.sweep.optuna_searcher import StudyRecordingOptunaSearch

pytestmark = pytest.mark.ray

QUALITY = {(0.1, 1e-4): 0.55, (0.1, 1e-3): 0.62, (0.5, 1e-4): 0.58, (0.5, 1e-3): 0.66}
STOPPED = (0.5, 1e-4)
SPACE = {"beta": CategoricalDistribution([0.1, 0.5]), "lr": CategoricalDistribution([1e-4, 1e-3])}
STEPS = (5, 10)


def trainable(config):
    key = (config["beta"], config["lr"])
    quality, kl = QUALITY[key], config["beta"] * 2
    for step in STEPS:
        tune.report({"quality": quality * step / 20, "step": step, "status": "running", "kl": kl})
    if key == STOPPED:
        return
    tune.report({"quality": quality, "quality_low": quality - 0.04, "quality_high": quality + 0.04,
                 "kl": kl, "status": "finished", "error": ""})  # fmt: skip


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is no package
    root = tmp_path_factory.mktemp("optuna-sweep")
    url = f"sqlite:///{root / 'optuna.db'}"
    searcher = StudyRecordingOptunaSearch(
        SPACE, objective=Objective("quality"), fixed={"method": "dpo"}, study_name="s",
        storage=optuna.storages.RDBStorage(url), seed=0,
    )  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space={"method": "dpo"},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=10, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="optuna", storage_path=str(root / "tune"), verbose=0),
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        grid = tuner.fit()
    study = optuna.load_study(study_name="s", storage=url)
    tries = [t for t in study.trials if DUPLICATE_OF not in t.user_attrs]
    return grid, tries, out.getvalue()


def test_the_sweep_runs_each_grid_point_once_then_ends(sweep):
    grid, tries, printed = sweep
    assert len(grid) == 4 and not grid.errors  # 10 asked for, 4 points
    assert sorted((r.config["beta"], r.config["lr"]) for r in grid) == sorted(QUALITY)
    assert sorted((t.params["beta"], t.params["lr"]) for t in tries) == sorted(QUALITY)
    assert "all 4 configurations of the grid are in study s" in printed


def test_the_study_holds_each_trials_story_and_intermediate_values(sweep):
    grid, tries, _ = sweep
    ids = {(r.config["beta"], r.config["lr"]): r.metrics["trial_id"] for r in grid}
    for trial in tries:
        key = (trial.params["beta"], trial.params["lr"])
        quality = QUALITY[key]
        assert trial.intermediate_values == {s: pytest.approx(quality * s / 20) for s in STEPS}
        attrs = trial.user_attrs
        assert attrs["trial_id"] == ids[key]
        assert attrs["trial_name"] == f"dpo-b{key[0]:g}-lr{key[1]:g}-{ids[key]}"
        assert attrs["kl"] == pytest.approx(key[0] * 2)
        if key != STOPPED:
            assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(quality)
            assert attrs["status"] == "finished" and attrs["error"] == ""
            assert (attrs["quality_low"], attrs["quality_high"]) == pytest.approx(
                (quality - 0.04, quality + 0.04))  # fmt: skip


def test_a_trial_whose_last_result_is_intermediate_is_pruned(sweep):
    _, tries, _ = sweep
    (stopped,) = [t for t in tries if (t.params["beta"], t.params["lr"]) == STOPPED]
    assert stopped.state == TrialState.PRUNED
    assert stopped.user_attrs["status"] == "pruned"  # as its store row says
    assert "at step 10" in stopped.user_attrs["error"]
    assert stopped.user_attrs["quality_low"] is None  # no final evaluation
