"""`raydaa search --mode optuna`'s study, sampler, warm start and end (raydaa.sweep.
optuna_sweep), from SearchSettings as the command fills them; no Ray cluster needed."""

import optuna
import pytest

from raydaa.config.search_space import MethodSpace
from raydaa.sweep.optuna_sweep import objective_of, searcher, sweep_study_name, trials_expected
from raydaa.sweep.search import SearchSettings

SPACE = MethodSpace(method="dpo", betas=[0.1, 0.5], lrs=[1e-4, 1e-3])
ROW = {"trial_id": "w1", "method": "dpo", **SPACE.fixed(), "beta": 0.1, "lr": 1e-4, "lambda_": 1.0,
       "epochs": 1, "seed": 0, "status": "finished", "error": "", "quality": 0.6, "kl": 0.4}  # fmt: skip


def settings(**changes):
    return SearchSettings(method="dpo", scenario="tiny", mode="optuna", **changes)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "tiny-dpo-two_stage"),
        ({"multi_objective": True}, "tiny-dpo-two_stage-pareto"),
        ({"objective": "pareto"}, "tiny-dpo-two_stage-pareto"),
        ({"space": "continuous", "objective": "quality-at-kl:0.5"},
         "tiny-dpo-two_stage-continuous-quality-at-kl0.5"),
    ],
)  # fmt: skip
def test_each_space_and_objective_has_a_study_of_its_own(changes, name):
    assert sweep_study_name(settings(**changes), "tiny") == name


def test_multi_objective_contradicting_another_objective_is_refused():
    with pytest.raises(ValueError, match="--multi-objective is --objective pareto"):
        objective_of(settings(multi_objective=True, objective="quality-at-kl:1"))


def test_the_searcher_gets_the_chosen_sampler_space_and_a_warm_study(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    chosen = settings(space="continuous", sampler="gp", objective="quality-at-kl:0.5", seed=3)
    made = searcher(chosen, SPACE, "tiny", url, [ROW], None)
    assert isinstance(made._ot_study.sampler, optuna.samplers.GPSampler)
    assert isinstance(made._space["beta"], optuna.distributions.FloatDistribution)
    assert made.objective.kl_budget == 0.5
    assert "warm start: 1 results-store row(s) entered Optuna study" in capsys.readouterr().out
    study = optuna.load_study(study_name=sweep_study_name(chosen, "tiny"), storage=url)
    assert [t.constraints for t in study.trials] == [{"kl": pytest.approx(-0.1)}]
    cold = settings(warm_start=False)
    searcher(cold, SPACE, "tiny", url, [ROW], None)
    assert "warm start" not in capsys.readouterr().out
    assert optuna.load_study(study_name=sweep_study_name(cold, "tiny"), storage=url).trials == []


def test_a_sweep_that_ran_out_of_grid_points_expects_only_the_trials_it_made(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    chosen = settings(num_trials=10)
    study = searcher(chosen, SPACE, "tiny", url, [ROW], None)._ot_study
    assert trials_expected(chosen, SPACE, url, "tiny", created=3) == 10  # 3 points untried
    for beta, lr in ((0.1, 1e-3), (0.5, 1e-4), (0.5, 1e-3)):
        study.enqueue_trial({"beta": beta, "lr": lr, "lambda_": 1.0, "epochs": 1})
        study.tell(study.ask(SPACE.optuna_space()), 0.5)
    assert trials_expected(chosen, SPACE, url, "tiny", created=3) == 3  # done: 3 of 10 made
