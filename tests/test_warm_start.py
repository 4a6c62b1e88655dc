"""Warm start (raydaa.sweep.warm_start): results-store rows enter a new Optuna study as
complete trials, once; the searcher then never reruns them and stops when the grid is
done. Real store files (write_row / read_store), a real SQLite study."""

import math

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from raydaa.config.objective import Objective
from raydaa.config.search_space import MethodSpace
from raydaa.io.results_store import read_store, write_row
from raydaa.sweep.optuna_searcher import StudyRecordingOptunaSearch
from raydaa.sweep.optuna_study import open_study
from raydaa.sweep.warm_start import WARM_START, warm_start

SPACE = MethodSpace(method="dpo", betas=[0.1, 0.5], lrs=[1e-4, 1e-3])
REFERENCE = "/r/tiny/sft"


def row(trial_id, beta, lr, quality=0.6, kl=0.5, **changes):
    base = {"trial_id": trial_id, "scenario": "tiny", **SPACE.fixed(), "beta": beta, "lr": lr,
            "lambda_": 1.0, "epochs": 1, "seed": 0, "status": "finished", "error": "",
            "quality": quality, "quality_low": quality - 0.05, "quality_high": quality + 0.05,
            "kl": kl, "reference_path": REFERENCE}  # fmt: skip
    return base | changes


ROWS = [
    row("w1", 0.1, 1e-4, quality=0.61, kl=0.8),  # taken
    row("w2", 0.5, 1e-3, quality=0.55, kl=math.nan),  # taken, except by a pareto study
    row("w0", 0.1, 1e-4, quality=0.70, seed=1),  # w1's seed replicate: not a search row
    row("w4", 0.5, 1e-4, status="diverged", quality=math.nan),  # no quality
    row("w5", 0.5, 1e-4, sft_weight=1.0),  # another setup (single-stage)
    row("w6", 0.5, 1e-4, reference_path="/r/tiny/other-sft"),  # another reference policy
    row("w7", 0.2, 1e-4),  # between the grid's β values
]


@pytest.fixture
def rows(tmp_path):
    for r in ROWS:
        write_row(tmp_path / "results", "tiny", r)
    return read_store(tmp_path / "results", "tiny", "dpo").to_pylist()


def test_store_rows_enter_the_study_once(tmp_path, rows):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    objective = Objective("quality")
    study = open_study(url, "s", objective)
    dists = SPACE.optuna_space()
    assert warm_start(study, rows, dists, SPACE.fixed(), objective, REFERENCE) == 2
    # a resumed or repeated sweep opens the same study: nothing is added twice
    again = open_study(url, "s", objective)
    assert warm_start(again, rows, dists, SPACE.fixed(), objective, REFERENCE) == 0
    trials = optuna.load_study(study_name="s", storage=url).trials
    got = {t.user_attrs["trial_id"]: t for t in trials}
    assert set(got) == {"w1", "w2"}
    assert got["w1"].state == TrialState.COMPLETE and got["w1"].value == 0.61
    assert got["w1"].params == {"beta": 0.1, "lr": 1e-4, "lambda_": 1.0, "epochs": 1}
    assert got["w1"].user_attrs[WARM_START] is True
    assert got["w1"].user_attrs["trial_name"] == "dpo-b0.1-lr0.0001-w1"
    assert got["w2"].user_attrs["kl"] is None


def test_a_configuration_the_study_ran_is_not_added_again(tmp_path, rows):
    """A store row of a configuration already in the study (its own trial, under another
    trial id) adds nothing: the study would hold the configuration twice."""
    study = open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", Objective("quality"))
    dists = SPACE.optuna_space()
    study.enqueue_trial({"beta": 0.1, "lr": 1e-4, "lambda_": 1.0, "epochs": 1})
    study.tell(study.ask(dists), 0.6)
    assert warm_start(study, rows, dists, SPACE.fixed(), Objective("quality"), REFERENCE) == 1
    assert len(study.trials) == 2


def test_pareto_needs_a_kl_and_a_kl_budget_constrains_warm_trials(rows):
    pareto = open_study(optuna.storages.InMemoryStorage(), "p", Objective("pareto"))
    dists = SPACE.optuna_space()
    assert warm_start(pareto, rows, dists, SPACE.fixed(), Objective("pareto"), REFERENCE) == 1
    assert pareto.trials[0].values == [0.61, 0.8]  # w1; w2's KL is NaN
    # the continuous box the grid spans also takes w7 (β 0.2, between the grid's values)
    budget = Objective("quality-at-kl", 1.0)
    at_kl = open_study(optuna.storages.InMemoryStorage(), "k", budget)
    box = SPACE.optuna_space("continuous")
    assert warm_start(at_kl, rows, box, SPACE.fixed(), budget, REFERENCE) == 3
    constraints = {t.user_attrs["trial_id"]: t.constraints["kl"] for t in at_kl.trials}
    assert constraints == {"w1": pytest.approx(-0.2), "w2": 1.0, "w7": pytest.approx(-0.5)}


def test_the_searcher_runs_only_the_untried_rest_of_the_grid(rows):
    """Two of four grid points warm-started: however many trials are asked for, the
    searcher suggests the other two, then says the grid is done."""
    storage = optuna.storages.InMemoryStorage()
    objective = Objective("quality")
    study = open_study(storage, "s", objective)
    warm_start(study, rows, SPACE.optuna_space(), SPACE.fixed(), objective, REFERENCE)
    searcher = StudyRecordingOptunaSearch(SPACE.optuna_space(), objective=objective,
                                          fixed=SPACE.fixed(), study_name="s", storage=storage,
                                          seed=0)  # fmt: skip
    suggested = []
    for index in range(10):
        config = searcher.suggest(f"t{index}")
        if config == Searcher.FINISHED:
            break
        suggested.append((config["beta"], config["lr"]))
        searcher.on_trial_complete(f"t{index}", {"quality": 0.5, "kl": 0.3, "status": "finished"})
    assert sorted(suggested) == [(0.1, 1e-3), (0.5, 1e-4)]
    assert index == 2  # the third suggestion: FINISHED
