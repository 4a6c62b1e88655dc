"""`raydaa study` end to end on a shrunken tiny scenario: real Ray Tune trials of Ray Train
+ DeepSpeed with evaluation, the results store, the report.

The cheapest path: `study rq3 --methods orpo --smoke` (two ORPO trials, run together),
then `study rq2 --methods orpo --smoke`, whose two stages are exactly those two
configurations, so it runs nothing and composes its table from RQ3's rows, then rq3 again
(resumed: nothing runs). The reference is the registered base model (no SFT stage: faster,
the same code path for the trials).
"""

import csv
import os
import subprocess
import sys

import pytest
from conftest import shrunken_search_spaces

from raydaa.config.scenario import load_scenario
from raydaa.io.results_store import read_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]


@pytest.fixture
def spaces(tmp_path, monkeypatch):
    """tiny with 12-step one-epoch trials and 32 evaluation prompts; ORPO's tiny grid
    β {0.1, 0.5, 1} x lr {3e-5, 1e-4}, which --smoke cuts to β {0.5, 1} x lr {1e-4}."""
    grid = {"betas": [0.1, 0.5, 1.0], "lrs": [3e-5, 1e-4]}
    root = shrunken_search_spaces(tmp_path / "search_spaces", "orpo", grid)
    monkeypatch.setenv("RAYDAA_SEARCH_SPACES", str(root))
    return root


def study(spaces, results, *args):
    env = dict(
        os.environ,
        RAYDAA_SEARCH_SPACES=str(spaces),
        # as tests/conftest.py's ray_cluster: quick Train polling, no extra actors
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.25",
        RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0",
        RAY_TRAIN_METRICS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "raydaa.cli", "study", *args, "--results", str(results)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def test_rq3_smoke_then_rq2_reuses_its_trials(spaces, tmp_path):
    from raydaa.train.stages import run_sft

    results = tmp_path / "results"
    run_sft(load_scenario("tiny"), results=results, base_init=True)

    out = study(spaces, results, "rq3", "--methods", "orpo", "--smoke")
    assert "[rq3 1/1] rq3/orpo: 2 configs in tiny" in out and "running 2" in out
    assert "[rq3 1/1] rq3/orpo: done in" in out
    rows = read_store(results, "tiny", "orpo").to_pylist()
    assert sorted((r["beta"], r["lr"]) for r in rows) == [(0.5, 1e-4), (1.0, 1e-4)]
    for row in rows:
        assert row["status"] == "finished", row["error"]
        assert 0 <= row["quality_low"] <= row["quality"] <= row["quality_high"] <= 1
    rq3_dir = results / "tiny" / "study" / "rq3"
    for name in ("rq3.md", "report.md", "summary.csv", "pareto_kinds.png", "pareto_kinds.html"):
        assert (rq3_dir / name).exists(), name

    out = study(spaces, results, "rq2", "--methods", "orpo", "--smoke")
    assert out.count("nothing to run") == 2 and "Ray:" not in out  # no trial, no Ray
    (gain,) = csv.DictReader(open(results / "tiny" / "study" / "rq2" / "tempering_gain.csv"))
    q = {r["beta"]: r["quality"] for r in rows}
    assert float(gain["gain"]) == pytest.approx(q[0.5] - q[1.0])
    assert (results / "tiny" / "study" / "rq2" / "beta_sensitivity.png").exists()

    out = study(spaces, results, "rq3", "--methods", "orpo", "--smoke")
    assert "nothing to run" in out
    again = read_store(results, "tiny", "orpo").to_pylist()
    assert sorted(r["trial_id"] for r in again) == sorted(r["trial_id"] for r in rows)
