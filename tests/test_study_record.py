"""How a Tune trial's results reach its Optuna trial (raydaa.sweep.study_record), checked
on a real Optuna study in SQLite, read back as optuna-dashboard reads it."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from raydaa.config.objective import Objective
from raydaa.sweep.optuna_study import open_study
from raydaa.sweep.study_record import record, report_intermediate

SPACE = {"beta": CategoricalDistribution([0.1, 0.5]), "lr": CategoricalDistribution([1e-4, 1e-3])}
CONFIG = {"config/method": "dpo", "config/beta": 0.1, "config/lr": 1e-4}  # as Tune flattens it


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def stored(url, name="s"):
    """The trials as a fresh reader of the database sees them."""
    return optuna.load_study(study_name=name, storage=url).trials


def test_a_finished_trial_carries_the_reports_story_and_its_intermediate_values(url):
    study = open_study(url, "s", Objective("quality"))
    trial = study.ask(SPACE)
    for step, quality in ((10, 0.52), (20, 0.58)):
        assert report_intermediate(study, trial, {"quality": quality, "step": step, "status": "running"})
    final = {**CONFIG, "status": "finished", "error": "", "quality": 0.61, "quality_low": 0.57,
             "quality_high": 0.65, "kl": 0.84}  # fmt: skip
    assert not report_intermediate(study, trial, final)  # a final result is no intermediate one
    assert record(study, trial, "a1b2c_00000", final, False, Objective("quality")) == TrialState.COMPLETE
    (got,) = stored(url)
    assert got.state == TrialState.COMPLETE and got.value == 0.61
    assert got.intermediate_values == {10: 0.52, 20: 0.58}
    assert got.user_attrs == {
        "trial_name": "dpo-b0.1-lr0.0001-a1b2c_00000", "trial_id": "a1b2c_00000",
        "status": "finished", "error": "", "kl": 0.84, "quality_low": 0.57, "quality_high": 0.65,
    }  # fmt: skip


def test_a_trial_stopped_mid_training_is_pruned_with_its_last_intermediate_value(url):
    """A Tune scheduler stops a trial on an intermediate result (status running) and skips
    the searcher's on_trial_result for it: record() reports that value itself."""
    study = open_study(url, "s", Objective("quality"))
    trial = study.ask(SPACE)
    report_intermediate(study, trial, {"quality": 0.40, "step": 10, "status": "running"})
    last = {**CONFIG, "quality": 0.35, "step": 20, "status": "running", "kl": 0.2}
    assert record(study, trial, "t1", last, False, Objective("quality")) == TrialState.PRUNED
    (got,) = stored(url)
    assert got.state == TrialState.PRUNED
    assert got.values == [0.35]  # Optuna gives a pruned trial its last intermediate value
    assert got.intermediate_values == {10: 0.40, 20: 0.35}
    assert got.user_attrs["status"] == "pruned"  # as its store row says
    assert "at step 20 (quality 0.35" in got.user_attrs["error"]


@pytest.mark.parametrize(
    "result, error, why",
    [
        ({"status": "diverged", "error": "non-finite loss at step 3", "quality": math.nan,
          "kl": math.nan}, False, "non-finite loss at step 3"),
        ({"status": "failed", "error": "evaluation: OSError", "quality": 0.5, "kl": 0.1}, False,
         "evaluation: OSError"),
        (None, True, "Tune reported the trial as errored"),
    ],
)  # fmt: skip
def test_failed_and_diverged_trials_fail_with_their_reason(url, result, error, why):
    study = open_study(url, "s", Objective("pareto"))
    trial = study.ask(SPACE)
    assert record(study, trial, "t1", result, error, Objective("pareto")) == TrialState.FAIL
    (got,) = stored(url)
    assert got.state == TrialState.FAIL and got.user_attrs["error"] == why
    assert got.user_attrs["kl"] is None or got.user_attrs["kl"] == 0.1  # NaN is stored as None


def tell(study, objective, beta, quality, kl):
    study.enqueue_trial({"beta": beta, "lr": 1e-4})  # the trial runs this β
    trial = study.ask(SPACE)
    result = {**CONFIG, "config/beta": beta, "status": "finished", "quality": quality, "kl": kl}
    record(study, trial, f"t{beta}", result, False, objective)


def test_a_kl_budget_makes_the_high_kl_trial_lose(url):
    """quality-at-kl:0.5: the better-quality trial breaks the KL budget, so the study's best
    is the other; under plain quality the same two trials rank the other way round."""
    budget = Objective("quality-at-kl", 0.5)
    constrained = open_study(url, "kl", budget)
    plain = open_study(url, "plain", Objective("quality"))
    for study, objective in ((constrained, budget), (plain, Objective("quality"))):
        tell(study, objective, 0.1, quality=0.9, kl=2.0)
        tell(study, objective, 0.5, quality=0.6, kl=0.3)
    assert plain.best_trial.params["beta"] == 0.1
    assert constrained.best_trial.params["beta"] == 0.5
    assert [t.constraints for t in stored(url, "kl")] == [
        {"kl": pytest.approx(1.5)}, {"kl": pytest.approx(-0.2)}
    ]
    tell(constrained, budget, 0.1, quality=0.95, kl=math.nan)  # unmeasured KL: infeasible
    assert stored(url, "kl")[-1].constraints == {"kl": pytest.approx(1.5)}  # the worst seen
    assert constrained.best_trial.params["beta"] == 0.5


def test_a_study_with_other_directions_is_refused(url):
    open_study(url, "s", Objective("quality"))
    with pytest.raises(ValueError, match="directions.*--objective pareto"):
        open_study(url, "s", Objective("pareto"))
