"""The scheduler `raydaa search --scheduler asha` builds, in a real Ray Tune run under
Optuna (`--mode optuna`), with the results store's callback: trials give Tune what a
sweep's trials give it (intermediate evaluations, status running with quality and step,
then one final result), and the ones ASHA stops become pruned rows. The trainable stands
in for the trial driver (no training): quality 0.6 at every step for a good
configuration, 0.2 for a bad one; Optuna's first picks are given, one trial at a time:
good, bad, good, bad. (The same with real trainings, in grid mode: test_early_stopping.py.)
"""

import sys

import pytest
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from raydaa.config.scenario import load_scenario
from raydaa.io.results_store import read_store
from raydaa.sweep.callbacks import ResultsStoreCallback
from raydaa.sweep.schedulers import build_scheduler
from raydaa.sweep.search import trial_ended

pytestmark = pytest.mark.ray

STEPS, EVERY = 12, 2


@pytest.fixture(scope="module", autouse=True)
def _ship_this_module_by_value():
    # pytest imports this file as a top-level module that Ray's workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def trial(config):
    for step in range(EVERY, STEPS, EVERY):
        tune.report({"step": step, "status": "running", "loss": 0.6, "quality": config["q"],
                     "quality_low": config["q"] - 0.1, "quality_high": config["q"] + 0.1,
                     "kl": 0.1, "eval_prompts": 16})  # fmt: skip
    tune.report({"step": STEPS, "status": "finished", "error": "", "quality": config["q"],
                 "kl": 0.2, "eval_prompts": 48, "checkpoint_path": "/runs/x/hf"})  # fmt: skip


def test_asha_under_optuna_prunes_the_bad_trials(ray_cluster, tmp_path):
    scenario = load_scenario("tiny")
    scenario.intermediate_eval.eval_every = EVERY
    scenario.early_stopping.reduction_factor = 2.0
    picks = [{"q": q} for q in (0.6, 0.2, 0.6, 0.2)]
    grid = tune.Tuner(
        trial,
        param_space={"method": "dpo", "beta": 0.1, "lr": 1e-4, "q": tune.choice([0.2, 0.6])},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="quality", mode="max", points_to_evaluate=picks,
                                    seed=0),
            scheduler=build_scheduler("asha", scenario, STEPS),
            num_samples=4, max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), callbacks=[
            ResultsStoreCallback(str(tmp_path), scenario, "asha")]),
    ).fit()  # fmt: skip
    assert not grid.errors
    rows = read_store(tmp_path, "tiny", "dpo").to_pylist()
    assert len(rows) == 4
    by_status = sorted((r["status"], r["quality"], r["eval_step"], r["error"]) for r in rows)
    reason = "stopped by asha at step 2 (quality 0.2 on 16 prompts)"
    assert by_status == [("finished", 0.6, STEPS, ""), ("finished", 0.6, STEPS, ""),
                         ("pruned", 0.2, 2, reason), ("pruned", 0.2, 2, reason)]
    # every trial ended: the sweep does not call itself interrupted
    assert all(trial_ended(r.metrics, str(tmp_path), "tiny", "dpo") for r in grid)
    pruned = [r for r in grid if r.metrics["quality"] == 0.2]
    assert all(r.metrics["status"] == "running" and r.metrics["step"] == 2 for r in pruned)
