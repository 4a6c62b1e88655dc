"""`--scheduler` checks and the Tune schedulers built from a scenario (raydaa.sweep.schedulers),
the forwarding of intermediate evaluations (raydaa.sweep.intermediate), and what ASHA does
with the results a trial gives Tune.

ASHA's rungs: grace g = grace_period x eval_every steps, then g x η^k up to max_t; with
tiny's 47 steps, eval_every 8, grace 1 and η 3: rungs at steps 8 and 24 (72 > 47)."""

from types import SimpleNamespace

import pytest
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, TrialScheduler

from raydaa.config.scenario import load_scenario
from raydaa.sweep.intermediate import IntermediateResults
from raydaa.sweep.schedulers import (
    SchedulerError,
    build_scheduler,
    hyperband_first_bracket,
    hyperband_warning,
    longest_run,
    scheduler_problem,
    trials_at_once,
)


@pytest.fixture
def tiny():
    scenario = load_scenario("tiny")
    scenario.intermediate_eval.eval_every = 8
    return scenario


def test_the_command_refuses_a_scheduler_without_evaluations_before_starting_ray(capsys, monkeypatch):
    from raydaa.cli import search

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(search, "connect_ray", no_ray)
    with pytest.raises(SystemExit) as exit_:
        search.search_main(["--method", "dpo", "--scheduler", "asha"])
    assert exit_.value.code == 2
    assert ("raydaa search: error: --scheduler asha stops trials on their intermediate "
            "evaluations, but scenario tiny has none") in capsys.readouterr().err


def test_no_scheduler_needs_nothing():
    scenario = load_scenario("tiny")  # intermediate evaluations off
    assert scheduler_problem("none", scenario) is None
    assert build_scheduler("none", scenario, 47) is None


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_a_scheduler_needs_intermediate_evaluations(kind):
    problem = scheduler_problem(kind, load_scenario("tiny"))
    assert f"--scheduler {kind} stops trials on their intermediate evaluations" in problem
    assert "scenario tiny has none: set intermediate_eval.eval_every" in problem
    with pytest.raises(SchedulerError, match="set intermediate_eval.eval_every"):
        build_scheduler(kind, load_scenario("tiny"), 47)


def test_unknown_scheduler(tiny):
    assert scheduler_problem("median", tiny) == (
        "--scheduler must be one of none, asha, hyperband, got 'median'")


def test_hyperband_needs_checkpoints_at_its_evaluations(tiny):
    assert "needs resources.checkpoint_every set to intermediate_eval.eval_every (8) or a " \
           "divisor of it (it is None)" in scheduler_problem("hyperband", tiny)
    tiny.resources.checkpoint_every = 3
    assert "(it is 3)" in scheduler_problem("hyperband", tiny)
    tiny.resources.checkpoint_every = 4
    assert scheduler_problem("hyperband", tiny) is None
    assert scheduler_problem("asha", tiny) is None  # ASHA never pauses a trial


def test_asha_from_the_scenario(tiny):
    tiny.early_stopping.reduction_factor = 3.0
    asha = build_scheduler("asha", tiny, 47)
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("step", "quality", "max", 47)
    assert asha._reduction_factor == 3.0
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [24, 8]
    tiny.early_stopping.grace_period = 2
    assert [m for m, _ in build_scheduler("asha", tiny, 47)._brackets[0]._rungs] == [16]


def test_asha_that_could_stop_nothing_is_an_error(tiny):
    tiny.early_stopping.grace_period = 6  # step 48 of a 47-step run
    with pytest.raises(SchedulerError) as err:
        build_scheduler("asha", tiny, 47)
    assert ("early_stopping.grace_period (6) x intermediate_eval.eval_every (8) = step 48, but "
            "the trials of scenario tiny train 47 steps") in str(err.value)
    tiny.early_stopping.grace_period = 5  # step 40: the run's last evaluation
    assert build_scheduler("asha", tiny, 47) is not None


def test_hyperband_from_the_scenario(tiny):
    tiny.resources.checkpoint_every = 8
    tiny.early_stopping.reduction_factor = 2.0
    hyperband = build_scheduler("hyperband", tiny, 47)
    assert isinstance(hyperband, HyperBandScheduler)
    assert (hyperband._time_attr, hyperband._metric, hyperband._max_t_attr, hyperband._eta) == (
        "step", "quality", 47, 2.0)
    with pytest.raises(SchedulerError, match=r"eval_every \(8\) is not below the 8 steps"):
        build_scheduler("hyperband", tiny, 8)


def test_max_t_is_the_longest_trial():
    steps = {None: 47, 1: 47, 2: 94}
    assert longest_run(steps.get, {None}) == 47
    assert longest_run(steps.get, [1, 2]) == 94
    assert longest_run(steps.get, []) == 47  # no epochs in the space: the recipe's


def trial(trial_id):
    return SimpleNamespace(trial_id=trial_id)


def test_asha_stops_on_intermediate_quality_and_ignores_results_without_it(tiny):
    """A result without `quality` (a training step's, or one without the step) changes no
    decision and records nothing; at the first rung (step 8) the second trial is below the
    first's quality and is stopped; a later trial above the rung's median goes on."""
    tiny.early_stopping.reduction_factor = 2.0
    asha = build_scheduler("asha", tiny, 47)
    for t in ("a", "b", "c"):
        asha.on_trial_add(None, trial(t))
    step = {"step": 8, "status": "running", "loss": 0.6}
    assert asha.on_trial_result(None, trial("a"), step) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, trial("a"), {"quality": 0.1}) == TrialScheduler.CONTINUE
    assert all(not recorded for _, recorded in asha._brackets[0]._rungs)
    assert asha.on_trial_result(None, trial("a"), step | {"quality": 0.6}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, trial("b"), step | {"quality": 0.4}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, trial("c"), step | {"quality": 0.55}) == TrialScheduler.CONTINUE


def test_only_intermediate_evaluations_reach_tune(monkeypatch):
    """Ray's callback forwards what it is given; ours gives it only reports of an
    intermediate evaluation (status running with a finite quality at a step), never a
    checkpoint, with the trial's extra columns added."""
    forwarded = []
    monkeypatch.setattr(TuneReportCallback, "__init__", lambda self: None)  # no Tune session
    monkeypatch.setattr(TuneReportCallback, "after_report",
                        lambda self, ctx, metrics, checkpoint: forwarded.append((metrics, checkpoint)))
    callback = IntermediateResults({"reference_path": "/ref"})
    evaluation = {"step": 8, "status": "running", "quality": 0.5, "kl": 0.1, "eval_prompts": 32}
    reports = [
        [{"step": 7, "status": "running", "loss": 0.6}],           # a training step
        [{"step": 8, "status": "running", "loss": 0.6, "eval_error": "ValueError: x"}],
        [{**evaluation, "quality": float("nan")}],
        [{"step": 47, "status": "finished", "loss": 0.5}],         # the run's last report
        [evaluation, dict(evaluation)],                            # two workers
    ]
    for metrics in reports:
        callback.after_report(None, metrics, checkpoint="a checkpoint")
    assert forwarded == [([evaluation | {"reference_path": "/ref"}, evaluation], None)]


@pytest.mark.parametrize(("max_steps", "factor"), [(12, 3), (81, 3), (24, 2), (5, 4)])
def test_hyperband_first_bracket_is_rays(max_steps, factor):
    ray_scheduler = HyperBandScheduler(time_attr="step", metric="quality", mode="max",
                                       max_t=max_steps, reduction_factor=factor)
    assert hyperband_first_bracket(max_steps, factor) == ray_scheduler._s_max_1


def test_hyperband_creates_every_trial_when_drivers_hold_their_cpus():
    assert trials_at_once("hyperband", 2, 6, drivers_hold_resources=True) == 6
    assert trials_at_once("hyperband", 8, 6, drivers_hold_resources=True) == 8
    # Ray Train runs would wait for workers under their start-up watchdog: the cap stays
    assert trials_at_once("hyperband", 2, 6, drivers_hold_resources=False) == 2
    assert trials_at_once("asha", 2, 6, drivers_hold_resources=True) == 2


def test_a_hyperband_sweep_that_can_stop_nothing_is_told_so():
    # tiny's 12 steps, η 3: the first bracket holds 3, a second needs 2 to stop one
    assert "stop none" in hyperband_warning(4, 4, 12, 3)  # measured: 4 trials, none stopped
    assert "stop none" in hyperband_warning(6, 2, 12, 3)  # 6 trials, 2 at once
    assert hyperband_warning(6, 6, 12, 3) is None  # measured: one stopped
