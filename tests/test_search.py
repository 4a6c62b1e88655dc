"""`raydaa search` on a shrunken tiny scenario: grid, Optuna, divergence, kill + resume.

The sweeps are real (Ray Tune driving Ray Train V2 + DeepSpeed trials, evaluation, the
results store); only the sizes shrink: 12-step trials, 32 evaluation prompts, 2×2 grids.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import shrunken_search_spaces

from raydaa.io.prompt_records import read_records
from raydaa.io.results_store import read_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

BETAS, LRS = [0.1, 0.5], [1e-4, 1e10]  # 1e10 diverges at once: the guard must record it
PROMPTS = 32  # shrunken_search_spaces' evaluation prompts


def assert_records(results, row) -> None:
    """A finished trial's per-prompt records sit beside its row: one per evaluation prompt,
    whose verdicts and k1 average to the row's quality and KL; other trials have none."""
    records = read_records(results, "tiny", "dpo", row["trial_id"])
    if row["status"] != "finished":
        assert records is None, row
        return
    assert records is not None and records.num_rows == PROMPTS, row["trial_id"]
    for column, key in (("verdict", "quality"), ("kl_k1", "kl")):
        values = records.column(column).to_pylist()
        assert sum(values) / len(values) == pytest.approx(row[key], abs=1e-9), column


@pytest.fixture(scope="module")
def spaces(tmp_path_factory):
    """A copy of raydaa/search_spaces/ with a small tiny scenario and a 2×2 DPO grid for tiny."""
    root = tmp_path_factory.mktemp("spaces") / "search_spaces"
    return shrunken_search_spaces(root, "dpo", {"betas": BETAS, "lrs": LRS})


def raydaa(spaces, *args, timeout=900, wait=True):
    env = dict(os.environ, RAYDAA_SEARCH_SPACES=str(spaces))
    cmd = [sys.executable, "-m", "raydaa.cli", *args]
    if not wait:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def results(spaces, tmp_path_factory):
    """A results dir whose tiny reference is the base model (no SFT: faster, same code path)."""
    path = tmp_path_factory.mktemp("results")
    out = raydaa(spaces, "sft", "--base", "--results", str(path))
    assert out.returncode == 0, out.stderr[-3000:]
    return path


def configs(table):
    return sorted(
        zip(table.column("beta").to_pylist(), table.column("lr").to_pylist(), strict=True)
    )


def test_grid_sweep_killed_then_resumed_matches_the_grid(spaces, results):
    """The 2×2 grid, its driver and every process it started SIGKILLed once two rows are
    written, then `--resume`d: every grid point has exactly one row (the diverging lr
    recorded as diverged), and the rows finished before the kill are not run again."""
    proc = raydaa(spaces, "search", "--method", "dpo", "--mode", "grid", "--results",
                  str(results), wait=False)
    deadline = time.time() + 600
    while time.time() < deadline and len(read_store(results, "tiny", "dpo")) < 2:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process it started
    proc.wait()
    before = read_store(results, "tiny", "dpo").to_pylist()
    assert 2 <= len(before) < 4
    store = results / "tiny" / "store" / "dpo"
    written = {r["trial_id"]: (store / f"{r['trial_id']}.parquet").stat().st_mtime_ns
               for r in before}

    out = raydaa(spaces, "search", "--method", "dpo", "--mode", "grid", "--resume",
                 "--results", str(results))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "results_store" in out.stdout
    # Tune's progress table carries the columns a user watches
    assert all(column in out.stdout for column in ("β", "quality", "KL", "status"))
    table = read_store(results, "tiny", "dpo")
    assert configs(table) == sorted((b, lr) for b in BETAS for lr in LRS)
    rows = table.to_pylist()
    for row in rows:
        if row["lr"] == 1e10:
            assert row["status"] == "diverged" and row["diverged_step"] >= 1
        else:
            assert row["status"] == "finished", row["error"]
            assert 0 <= row["quality_low"] <= row["quality"] <= row["quality_high"] <= 1
            assert row["kl_k3"] >= 0 and row["checkpoint_path"]
        assert_records(results, row)  # rows re-reported on resume still have their records
    assert len({r["trial_id"] for r in rows}) == 4
    kept = {r["trial_id"]: r for r in rows}
    for row in before:  # finished before the kill: not run again, so its row is not rewritten
        # (a rerun keeps the trial id and checkpoint path but measures its own
        # device_seconds and writes the row file anew)
        assert kept[row["trial_id"]] == row
        assert (store / f"{row['trial_id']}.parquet").stat().st_mtime_ns == written[row["trial_id"]]


def test_optuna_sweep_study_is_readable_from_sqlite(spaces, tmp_path, results):
    shutil.copytree(
        results / "tiny", tmp_path / "tiny", ignore=shutil.ignore_patterns("store", "tune", "runs")
    )
    out = raydaa(
        spaces,
        "search",
        "--method",
        "dpo",
        "--mode",
        "optuna",
        "--num-trials",
        "2",
        "--seed",
        "5",  # TPE's first two picks with seed 5: lr 1e10 (diverges), then lr 1e-4
        "--results",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    db = tmp_path / "tiny" / "optuna.db"
    study = optuna.load_study(study_name="tiny-dpo-two_stage", storage=f"sqlite:///{db}")
    assert len(study.trials) == 2
    rows = read_store(tmp_path, "tiny", "dpo").to_pylist()
    assert len(rows) == 2
    # every trial ended in the study: the diverged one as FAIL (Optuna takes no NaN), the
    # finished one COMPLETE with its row's quality
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"], states
    for trial in study.trials:
        assert trial.params["beta"] in BETAS and trial.params["lr"] in LRS
        assert (trial.state.name == "FAIL") == (trial.params["lr"] == 1e10)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            match = [
                r
                for r in rows
                if (r["beta"], r["lr"]) == (trial.params["beta"], trial.params["lr"])
            ]
            assert any(abs(r["quality"] - trial.value) < 1e-12 for r in match)


def test_multi_objective_optuna_study_keeps_exactly_the_pareto_front(spaces, tmp_path, results):
    """`--multi-objective`: the stored study has two directions (quality max, KL min), and
    its best_trials are exactly the non-dominated finished rows of the sweep's store."""
    shutil.copytree(
        results / "tiny", tmp_path / "tiny", ignore=shutil.ignore_patterns("store", "tune", "runs")
    )
    out = raydaa(
        spaces, "search", "--method", "dpo", "--mode", "optuna", "--multi-objective",
        "--num-trials", "3", "--seed", "2", "--results", str(tmp_path),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = optuna.load_study(  # a pareto study has a name of its own (its directions differ)
        study_name="tiny-dpo-two_stage-pareto",
        storage=f"sqlite:///{tmp_path / 'tiny' / 'optuna.db'}",
    )
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    ]
    rows = [r for r in read_store(tmp_path, "tiny", "dpo").to_pylist() if r["status"] == "finished"]
    assert rows, "no finished trial to build a front from"

    def dominated(a, others):
        return any(
            o["quality"] >= a["quality"] and o["kl"] <= a["kl"]
            and (o["quality"] > a["quality"] or o["kl"] < a["kl"])
            for o in others
        )

    front = sorted((r["beta"], r["lr"]) for r in rows if not dominated(r, rows))
    # a suggestion that repeated a tried configuration is in the study, told, never run
    ran = [t for t in study.best_trials if "duplicate_of" not in t.user_attrs]
    best = sorted((t.params["beta"], t.params["lr"]) for t in ran)
    assert best == front
    # trial drivers are reused: 3 trials, at most 2 at a time, in at most 2 processes
    experiment = tmp_path / "tiny" / "tune" / "dpo-two_stage-optuna-pareto"
    drivers = {json.loads(line)["pid"] for f in experiment.glob("*/result.json") for line in f.open()}
    assert len(list(experiment.glob("*/result.json"))) >= 3, list(experiment.iterdir())
    assert 1 <= len(drivers) <= 2, drivers
    for trial in ran:  # the study's values are the rows' quality and KL
        matches = [r for r in rows if (r["beta"], r["lr"]) == (trial.params["beta"], trial.params["lr"])]
        assert any(trial.values == pytest.approx([m["quality"], m["kl"]], abs=1e-12) for m in matches)
