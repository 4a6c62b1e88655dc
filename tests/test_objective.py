"""`raydaa search --objective quality|quality-at-kl:K|pareto` and the other Optuna flags:
parsing, the errors that name the flag and the expected form, and the KL constraint."""

import argparse
import math

import pytest

from raydaa.cli.optuna_options import add_optuna_options, check_optuna_options
from raydaa.cli.search import search_main
from raydaa.config.objective import Objective, parse_objective


@pytest.mark.parametrize(
    "text, kind, budget, metric, mode",
    [
        ("quality", "quality", None, "quality", "max"),
        ("quality-at-kl:0.5", "quality-at-kl", 0.5, "quality", "max"),
        ("pareto", "pareto", None, ["quality", "kl"], ["max", "min"]),
    ],
)
def test_the_three_forms_parse(text, kind, budget, metric, mode):
    objective = parse_objective(text)
    assert (objective.kind, objective.kl_budget) == (kind, budget)
    assert (objective.metric, objective.mode) == (metric, mode)
    assert objective.label == text


@pytest.mark.parametrize(
    "text",
    ["best", "quality-at-kl", "quality-at-kl:", "quality-at-kl:0", "quality-at-kl:-1",
     "quality-at-kl:nan", "quality-at-kl:inf", "quality-at-kl:abc", "pareto:1", "quality:2"],
)  # fmt: skip
def test_a_malformed_objective_names_the_flag_and_the_expected_form(text):
    with pytest.raises(ValueError, match=r"--objective .*quality-at-kl:0\.5"):
        parse_objective(text)


def test_the_kl_constraint_is_kl_minus_k_and_an_unmeasured_kl_is_infeasible():
    objective = Objective("quality-at-kl", 0.5)
    assert objective.kl_constraint(0.2) == pytest.approx(-0.3)  # feasible: <= 0
    assert objective.kl_constraint(0.9) == pytest.approx(0.4)
    for kl in (None, math.nan):
        assert objective.kl_constraint(kl) == 0.5  # K over the budget at least
        assert objective.kl_constraint(kl, worst=3.0) == 3.0  # as bad as the worst seen


@pytest.fixture
def cli_error(capsys, monkeypatch):
    """`raydaa search ARGS`' argparse error; a command that gets past the argument checks
    stops right there (it would start Ray and a real sweep)."""

    def past_the_checks(*_):
        raise AssertionError("raydaa search accepted the arguments")

    monkeypatch.setattr("raydaa.cli.search.scenario_or_exit", past_the_checks)

    def error(*args) -> str:
        with pytest.raises(SystemExit) as stop:
            search_main(["--method", "dpo", *args])
        assert stop.value.code == 2
        return capsys.readouterr().err

    return error


@pytest.mark.parametrize(
    "args, flags",
    [
        (["--space", "continuous"], "--space"),
        (["--sampler", "gp"], "--sampler"),
        (["--objective", "pareto"], "--objective"),
        (["--multi-objective", "--no-warm-start"], "--multi-objective, --no-warm-start"),
    ],
)
def test_optuna_flags_outside_optuna_mode_are_refused(cli_error, args, flags):
    assert f"{flags}: only with --mode optuna" in cli_error(*args)


def test_the_cli_names_the_objective_form_and_a_contradiction(cli_error):
    err = cli_error("--mode", "optuna", "--objective", "quality-at-kl:0")
    assert "--objective 'quality-at-kl:0': K must be finite and > 0" in err
    assert "quality-at-kl:0.5" in err
    err = cli_error("--mode", "optuna", "--multi-objective", "--objective", "quality")
    assert "--multi-objective is --objective pareto" in err


def parsed(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="grid")
    add_optuna_options(parser)
    args = parser.parse_args(argv)
    check_optuna_options(parser, args)
    return args


def test_defaults_and_the_multi_objective_alias():
    args = parsed("--mode", "optuna")
    assert (args.space, args.sampler, args.objective, args.warm_start) == ("grid", "tpe", "quality", True)
    assert parsed("--mode", "optuna", "--multi-objective").objective == "pareto"
    args = parsed("--mode", "optuna", "--space", "continuous", "--sampler", "gp",
                  "--objective", "quality-at-kl:2", "--no-warm-start")  # fmt: skip
    assert (args.space, args.sampler, args.objective, args.warm_start) == (
        "continuous", "gp", "quality-at-kl:2", False)  # fmt: skip
    assert parsed().objective == "quality"  # grid mode: the defaults, unused
