"""ReportRefreshCallback: throttling and error handling by direct calls, then a real Ray
Tune run whose later trials read the report the earlier ones refreshed."""

import csv
import logging
import sys
from pathlib import Path

import pytest
import ray
from ray import tune

from raydaa.config.scenario import load_scenario
from raydaa.io.results_store import write_row
from raydaa.sweep.callbacks import ResultsStoreCallback
from raydaa.sweep.report_refresh import ReportRefreshCallback


def summary_total(report_dir: Path) -> int:
    """Trials the report's summary.csv counts (0 before the first build)."""
    path = Path(report_dir) / "summary.csv"
    if not path.exists():
        return 0
    with open(path, newline="") as handle:
        return sum(int(row["total"]) for row in csv.DictReader(handle))


def row(trial_id, beta, quality=0.6, kl=1.0):
    return {"trial_id": trial_id, "scenario": "tiny", "method": "dpo", "beta": beta, "lr": 1e-6,
            "status": "finished", "quality": quality, "kl": kl}  # fmt: skip


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rebuilds_are_throttled_and_the_end_always_rebuilds(tmp_path):
    clock = Clock()
    callback = ReportRefreshCallback(tmp_path, "tiny", min_interval_s=60, clock=clock)
    report = tmp_path / "tiny" / "report"
    write_row(tmp_path, "tiny", row("t1", 0.1))
    callback.on_trial_complete(iteration=1, trials=[], trial=None)  # first: builds at once
    assert (callback.builds, summary_total(report)) == (1, 1)

    write_row(tmp_path, "tiny", row("t2", 0.2))
    clock.now += 10
    callback.on_trial_error(iteration=2, trials=[], trial=None)  # 10 s later: waits
    clock.now += 30
    callback.on_step_end(iteration=3, trials=[])  # 40 s: still waits
    assert (callback.builds, summary_total(report)) == (1, 1)
    clock.now += 21
    callback.on_step_end(iteration=4, trials=[])  # 61 s: the pending trial is picked up
    assert (callback.builds, summary_total(report)) == (2, 2)
    clock.now += 1
    callback.on_step_end(iteration=5, trials=[])  # nothing pending: no rebuild
    assert callback.builds == 2

    write_row(tmp_path, "tiny", row("t3", 0.3))
    clock.now += 1
    callback.on_experiment_end(trials=[])  # the end rebuilds whatever the interval
    assert (callback.builds, summary_total(report)) == (3, 3)


def test_a_failing_rebuild_is_logged_and_never_raised(tmp_path, caplog):
    write_row(tmp_path, "tiny", row("t1", 0.1))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the report directory should go")
    callback = ReportRefreshCallback(tmp_path, "tiny", min_interval_s=0, out=blocker)
    with caplog.at_level(logging.ERROR, logger="raydaa.sweep.report_refresh"):
        callback.on_trial_complete(iteration=1, trials=[], trial=None)
        callback.on_experiment_end(trials=[])
    assert (callback.builds, callback.errors) == (0, 2)
    assert "report rebuild failed (the sweep goes on)" in caplog.text
    assert "FileExistsError" in caplog.text


def test_an_empty_store_is_not_an_error(tmp_path):
    callback = ReportRefreshCallback(tmp_path, "tiny", min_interval_s=0)
    callback.on_experiment_end(trials=[])
    assert (callback.builds, callback.errors) == (0, 0)


def trivial_trial(config):
    """Reads the report as it stands when the trial starts, then reports made-up metrics
    (or fails, for β = 0.5)."""
    seen = summary_total(config["report_dir"])
    if config["beta"] == 0.5:
        raise RuntimeError("synthetic trial failure")
    quality = 0.5 + config["beta"]
    tune.report({"status": "finished", "quality": quality, "quality_low": quality - 0.05,
                 "quality_high": quality + 0.05, "kl": 1.0 / config["beta"], "kl_low": 0.0,
                 "kl_high": 2.0 / config["beta"], "seen_in_report": seen})  # fmt: skip


@pytest.mark.ray
def test_a_tune_run_refreshes_the_report_after_each_trial(ray_cluster, tmp_path):
    """One trial at a time, β in grid order 0.01, 0.5 (fails), 0.1: the third trial starts
    after the first finished and the second failed, and must find both in the report."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is no package
    results, scenario = tmp_path / "results", load_scenario("tiny")
    report_dir = results / "tiny" / "report"
    refresh = ReportRefreshCallback(results, "tiny", min_interval_s=0)
    tuner = tune.Tuner(
        trivial_trial,
        param_space={
            "method": "dpo",
            "lr": 1e-6,
            "beta": tune.grid_search([0.01, 0.5, 0.1]),
            "report_dir": str(report_dir),
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(
            name="report-refresh",
            storage_path=str(tmp_path / "tune"),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[ResultsStoreCallback(str(results), scenario), refresh],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    seen = sorted(r.metrics["seen_in_report"] for r in grid if r.error is None)
    assert seen == [0, 2]  # the first trial saw no report; the last saw 1 finished + 1 failed
    assert refresh.builds >= 3 and refresh.errors == 0  # 3 trial ends + the experiment end
    with open(report_dir / "summary.csv", newline="") as handle:
        (dpo,) = list(csv.DictReader(handle))
    assert (dpo["finished"], dpo["failed"], dpo["total"]) == ("2", "1", "3")
    assert float(dpo["quality"]) == pytest.approx(0.6)  # β = 0.1: 0.5 + 0.1
    with open(report_dir / "failures.csv", newline="") as handle:
        (failed,) = list(csv.DictReader(handle))
    # ResultsStoreCallback records the exception's message, then where the traceback is
    assert (failed["beta"], failed["status"]) == ("0.5", "failed")
    assert "RuntimeError: synthetic trial failure" in failed["error"]
    assert failed["error"].endswith("error.txt)")
