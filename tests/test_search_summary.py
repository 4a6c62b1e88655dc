"""What `raydaa search` prints when a sweep ends: the best configuration of *this* sweep's
space (the store may hold the method's other setups), where report.md is, the dashboards."""

from raydaa.cli.search import print_next_steps
from raydaa.config.scenario import load_scenario
from raydaa.config.search_space import load_method_space
from raydaa.io.results_store import write_row


def orpo_row(trial, point, quality, **changes):
    return point | changes | {
        "trial_id": trial, "scenario": "tiny", "seed": 0, "status": "finished",
        "quality": quality, "quality_low": quality - 0.04, "quality_high": quality + 0.04,
        "kl": 0.5, "kl_low": 0.4, "kl_high": 0.6,
    }  # fmt: skip


def test_the_best_is_this_sweeps_and_the_next_steps_are_named(tmp_path, capsys):
    scenario = load_scenario("tiny")
    space = load_method_space("orpo", scenario)  # two-stage: sft_weight 0, β searched
    first, second = space.grid()[:2]
    write_row(tmp_path, "tiny", orpo_row("two1", first, 0.61))
    write_row(tmp_path, "tiny", orpo_row("two2", second, 0.55))
    # a single-stage ORPO row of the same method, better but from another setup
    write_row(tmp_path, "tiny", orpo_row("one1", first, 0.90, sft_weight=1.0, lambda_=0.5))
    where = {"optuna_storage": "sqlite:///db.sqlite", "optuna_study": "tiny-orpo-two_stage",
             "tune_experiment": "/r/tiny/tune/orpo-two_stage-optuna"}
    print_next_steps(str(tmp_path), "tiny", space, where, "http://127.0.0.1:8265",
                     log_to=("tensorboard", "mlflow"))
    out = capsys.readouterr().out
    assert (
        f"best orpo configuration (2 finished trials): β={first['beta']:g} lr={first['lr']:g}: "
        "quality 0.6100 [0.5700, 0.6500], KL 0.5000 [0.4000, 0.6000]"
    ) in out
    assert f"report:           {tmp_path / 'tiny' / 'report' / 'report.md'}" in out
    assert "Ray dashboard:    http://127.0.0.1:8265" in out
    assert "optuna-dashboard sqlite:///db.sqlite" in out
    assert "TensorBoard:      tensorboard --logdir /r/tiny/tune/orpo-two_stage-optuna" in out


def test_a_sweep_without_rows_says_so(tmp_path, capsys):
    space = load_method_space("dpo", load_scenario("tiny"))
    print_next_steps(str(tmp_path), "tiny", space, {}, None)
    out = capsys.readouterr().out
    assert "no finished dpo trial with a quality yet" in out and "Ray dashboard" not in out
    assert "TensorBoard" not in out  # not asked for


def test_one_finished_trial_is_one_trial(tmp_path, capsys):
    space = load_method_space("orpo", load_scenario("tiny"))
    write_row(tmp_path, "tiny", orpo_row("two1", space.grid()[0], 0.61))
    print_next_steps(str(tmp_path), "tiny", space, {}, None)
    assert "best orpo configuration (1 finished trial): " in capsys.readouterr().out


def test_under_a_kl_budget_the_best_is_the_best_within_it(tmp_path, capsys):
    space = load_method_space("orpo", load_scenario("tiny"))
    inside, outside = space.grid()[:2]
    write_row(tmp_path, "tiny", orpo_row("in", inside, 0.60) | {"kl": 0.3})
    write_row(tmp_path, "tiny", orpo_row("out", outside, 0.70) | {"kl": 0.8})  # over budget
    print_next_steps(str(tmp_path), "tiny", space, {}, None, kl_budget=0.5)
    out = capsys.readouterr().out
    assert (f"best orpo configuration within KL ≤ 0.5 (1 finished trial): "
            f"β={inside['beta']:g} lr={inside['lr']:g}: quality 0.6000") in out
    print_next_steps(str(tmp_path), "tiny", space, {}, None, kl_budget=0.1)
    assert "no finished orpo trial with a quality within KL ≤ 0.1 yet" in capsys.readouterr().out


def test_the_sweep_says_where_to_watch_it_as_it_starts():
    from raydaa.sweep.search import watch_lines

    experiment = "/r/tiny/tune/dpo-two_stage-grid"
    lines = watch_lines(experiment, ("tensorboard", "mlflow")).splitlines()
    assert lines[0].startswith("watch it: raydaa dashboard ")
    assert lines[1].split() == ["tensorboard", "--logdir", experiment, "(training", "curves)"]
    assert watch_lines(experiment, ("mlflow",)).count("\n") == 0  # no TensorBoard asked for
