"""What the sweep's console says about each trial: its row's status, quality, KL and peak
memory (raydaa.sweep.callbacks.row_line), from what the trial reported."""

import math
from types import SimpleNamespace

from raydaa.config.scenario import load_scenario
from raydaa.io.results_store import SCHEMA
from raydaa.sweep.callbacks import ResultsStoreCallback, row_line
from raydaa.sweep.trial import RESULT_KEYS

MEMORY_KEYS = ("peak_rss_mib", "peak_gpu_mib", "eval_peak_rss_mib", "eval_peak_gpu_mib")


def test_peak_memory_is_reported_kept_in_the_row_and_stored():
    assert set(MEMORY_KEYS) | {"sampling_tokens_per_s"} <= set(RESULT_KEYS) <= set(SCHEMA.names)
    trial = SimpleNamespace(config={"method": "dpo", "beta": 0.1, "lr": 1e-4, "epochs": None},
                            trial_id="t1")
    result = {"status": "finished", "quality": 0.61, "kl": 0.84, "peak_rss_mib": 1434.0,
              "eval_peak_rss_mib": 870.4, "peak_gpu_mib": math.nan}
    row = ResultsStoreCallback("unused", load_scenario("tiny"))._row(trial, result)
    assert (row["peak_rss_mib"], row["eval_peak_rss_mib"]) == (1434.0, 870.4)
    assert row_line(row) == ("finished, quality 0.61, KL 0.84, peak memory: training 1.40 GiB "
                             "resident per worker, evaluation 0.85 GiB resident")


def test_gpu_peaks_are_named_and_a_failed_trial_says_why():
    row = {"status": "finished", "quality": 0.5, "kl": 0.1, "peak_rss_mib": 2048.0,
           "peak_gpu_mib": 40960.0, "eval_peak_rss_mib": None, "eval_peak_gpu_mib": 1024.0}
    assert row_line(row).endswith("peak memory: training 2.00 GiB resident per worker, "
                                  "training 40.00 GiB GPU per worker, evaluation 1.00 GiB GPU")
    assert row_line({"status": "failed", "error": "evaluation: OOM"}) == "failed: evaluation: OOM"
    assert row_line({"status": "diverged", "error": ""}) == "diverged: no reason recorded"
