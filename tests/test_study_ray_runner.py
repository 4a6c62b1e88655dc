"""The study's Tune sweep on a real local Ray: exactly the given points, at most N at once."""

from __future__ import annotations

import time

import pytest
from ray import tune

from raydaa.sweep.tuner import points_sweep

pytestmark = pytest.mark.ray


def test_points_sweep_runs_each_point_once_and_at_most_n_at_once(ray_cluster, tmp_path):
    """Five 0-CPU trials of 1.5 s each: without the limit all five overlap (the bug: Tune
    dropped TuneConfig's limit beside a BasicVariantGenerator); with it, at most two."""

    def timed(config):  # nested: Ray ships it by value (tests/ is not importable on workers)
        start = time.time()
        time.sleep(1.5)
        tune.report({"beta": config["beta"], "start": start, "end": time.time()})

    configs = [{"method": "dpo", "beta": b, "lr": 1e-4} for b in (0.1, 0.2, 0.3, 0.4, 0.5)]
    param_space, tune_config = points_sweep(configs, at_once=2)
    results = tune.Tuner(
        tune.with_resources(timed, {"CPU": 0, "memory": 2**20}),
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="points", verbose=0),
    ).fit()
    assert not results.errors, results.errors
    rows = [r.metrics for r in results]
    assert sorted(r["beta"] for r in rows) == [0.1, 0.2, 0.3, 0.4, 0.5]
    overlap = max(sum(o["start"] <= r["start"] < o["end"] for o in rows) for r in rows)
    assert overlap == 2
