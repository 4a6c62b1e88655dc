"""Trial drivers by name in the Ray dashboard's Actors view (its Repr column, which Ray
reads once from an actor that has started): a driver Tune does not reuse shows its trial's
readable name (what `raydaa search --scheduler` runs), a reused one says it is reused
(never a name that is only its first trial's). Real Tune on a local Ray with its dashboard,
the same wrapping as sweep_trainable around a trial function that reports at once. The
reference cache's scoring tasks, in the Tasks view, by the pairs each scores.
"""

from __future__ import annotations

import sys
import time

import pytest
import ray
from ray import cloudpickle, tune
from ray.util.state import list_actors, list_tasks

from raydaa.sweep.tuner import REUSED_DRIVER, named_drivers, tune_trial_name

pytestmark = [pytest.mark.ray]


def trial(config):
    tune.report({"done": 1})


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


@pytest.fixture(scope="module")
def ray_with_dashboard():
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    # the state API finds the dashboard through this GCS: never another Ray on the machine
    # (another test process's, under pytest-xdist)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def drivers(gcs_address: str) -> dict[str, str]:
    """Actor id -> repr of every trial driver this Ray has had."""
    actors = list_actors(address=gcs_address, detail=True, raise_on_missing_output=False)
    # `ImplicitFunc`, or `wrap_function.<locals>.ImplicitFunc` for a later class of it
    return {a.actor_id: a.repr_name for a in actors if a.class_name.endswith("ImplicitFunc")}


@pytest.mark.parametrize("reused", [False, True])
def test_drivers_show_their_trials_names(ray_with_dashboard, tmp_path, reused):
    before = set(drivers(ray_with_dashboard))
    tuner = tune.Tuner(
        named_drivers(tune.with_resources(trial, {"CPU": 1}), reused),
        param_space={"method": "dpo", "beta": tune.grid_search([0.1, 0.5]), "lr": 1e-6},
        tune_config=tune.TuneConfig(reuse_actors=reused, trial_name_creator=tune_trial_name,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    names = sorted(f"dpo-b{r.config['beta']:g}-lr1e-06-{r.metrics['trial_id']}" for r in grid)
    deadline = time.time() + 30  # the state API lists an actor once the GCS has told it
    while len(shown := sorted(r for a, r in drivers(ray_with_dashboard).items()
                              if a not in before)) < (1 if reused else len(names)):
        assert time.time() < deadline, ("trial drivers listed", shown)
        time.sleep(1)
    if reused:
        assert set(shown) == {REUSED_DRIVER}, shown
    else:
        assert shown == names, shown


def test_reference_cache_tasks_are_named_by_their_pairs(ray_with_dashboard, tmp_path):
    import datasets

    from raydaa.scenarios import build_tiny_model
    from raydaa.train.refcache import compute_reference_logps

    build_tiny_model(0).save_pretrained(tmp_path / "reference")
    pair = {"chosen_input_ids": [1, 5, 6], "chosen_labels": [-100, 5, 6],
            "rejected_input_ids": [1, 5, 7], "rejected_labels": [-100, 5, 7]}
    rows = [{"index": i, **pair} for i in range(10)]
    compute_reference_logps(tmp_path / "reference", datasets.Dataset.from_list(rows),
                            pad_token_id=0, num_workers=2, say=lambda _: None)
    wanted = {"reference cache: pairs 0-5 of 10", "reference cache: pairs 5-10 of 10"}
    deadline, names = time.time() + 60, set()  # task events reach the GCS about every second
    while not wanted <= names:
        assert time.time() < deadline, sorted(n for n in names if "reference" in n)
        time.sleep(1)
        names = {t.name for t in list_tasks(address=ray_with_dashboard, limit=10_000,
                                            raise_on_missing_output=False)}
