"""No configuration twice in one Optuna study (raydaa.sweep.no_repeat), on Optuna alone:
a repeat is told from its twin, never run; a grid whose points are all tried is done."""

import random

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from raydaa.sweep.no_repeat import (
    DUPLICATE_OF,
    enqueue_untried,
    exhausted,
    tell_duplicate,
    twin_of,
    untried_points,
)

SPACE = {"beta": CategoricalDistribution([0.1, 0.5]), "lr": CategoricalDistribution([1e-4, 1e-3])}


def run(study, beta, lr, state=TrialState.COMPLETE, value=0.5):
    study.enqueue_trial({"beta": beta, "lr": lr})
    trial = study.ask(SPACE)
    if state != TrialState.RUNNING:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    return trial


def test_a_repeat_of_a_complete_trial_is_told_its_value_and_names_its_twin(capsys):
    study = optuna.create_study(direction="maximize")
    first = run(study, 0.1, 1e-4, value=0.61)
    run(study, 0.5, 1e-4, value=0.7)
    assert twin_of(study, first.number, first.params) is None  # nothing else ran it
    repeat = run(study, 0.1, 1e-4, state=TrialState.RUNNING)
    twin = twin_of(study, repeat.number, repeat.params)
    assert twin.number == first.number
    tell_duplicate(study, repeat, twin)
    told = study.trials[repeat.number]
    assert told.state == TrialState.COMPLETE and told.value == 0.61
    assert told.user_attrs == {DUPLICATE_OF: first.number, "status": "duplicate"}
    said = capsys.readouterr().out  # the user sees it was not trained, and why
    assert f"trial {repeat.number} (" in said and f"repeats trial {first.number}" in said


def test_a_repeat_of_a_running_or_failed_trial_fails_and_tells_no_value():
    for state in (TrialState.RUNNING, TrialState.FAIL, TrialState.PRUNED):
        study = optuna.create_study(direction="maximize")
        run(study, 0.5, 1e-3, state=state)
        repeat = run(study, 0.5, 1e-3, state=TrialState.RUNNING)
        tell_duplicate(study, repeat, twin_of(study, repeat.number, repeat.params))
        assert study.trials[repeat.number].state == TrialState.FAIL, state


def test_told_repeats_are_no_tries_and_the_grid_ends_after_its_four_points():
    study = optuna.create_study(direction="maximize")
    points = [(0.1, 1e-4), (0.1, 1e-3), (0.5, 1e-4)]
    for beta, lr in points:
        run(study, beta, lr)
    repeat = run(study, 0.1, 1e-4, state=TrialState.RUNNING)
    tell_duplicate(study, repeat, twin_of(study, repeat.number, repeat.params))
    assert untried_points(study, SPACE) == [{"beta": 0.5, "lr": 1e-3}]
    assert not exhausted(study, SPACE)
    assert enqueue_untried(study, SPACE, random.Random(0))
    assert study.ask(SPACE).params == {"beta": 0.5, "lr": 1e-3}  # the enqueued point, running
    assert exhausted(study, SPACE)
    assert not enqueue_untried(study, SPACE, random.Random(0))


def test_a_continuous_space_never_runs_out():
    study = optuna.create_study(direction="maximize")
    space = {"beta": optuna.distributions.FloatDistribution(0.01, 1.0, log=True)}
    study.tell(study.ask(space), 0.5)
    assert not exhausted(study, space) and untried_points(study, space) == []
