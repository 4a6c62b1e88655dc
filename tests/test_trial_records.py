"""The trial driver writes its per-prompt records before it reports, on a directory and on
a real S3 server (moto): a finished trial has them, a re-run that re-reports its stored
row (`--resume` after a kill) keeps them untouched, and a failed evaluation still
reports its row with the reason. Training is replaced by a saved tiny model (the driver's
own code, Tune's report and the real evaluation are what runs); the full sweep's records
are checked in tests/test_search.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from raydaa.config.scenario import load_scenario
from raydaa.io import storage
from raydaa.io.prompt_records import read_records, records_path
from raydaa.io.results_store import write_row
from raydaa.sweep import trial as trial_module
from raydaa.train import stages
from raydaa.train.stages import AlignmentInputs, StageResult

CONFIG = {"method": "dpo", "beta": 0.1, "lr": 1e-4}


@pytest.fixture
def results(storage_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDAA_CACHE", str(tmp_path / "cache"))
    return storage_root


@pytest.fixture
def driver(tmp_path, monkeypatch):
    """Runs trial_driver as trial `trial_id` with Tune's context and report captured and
    training replaced by two saved tiny models (policy seed 1, reference seed 0)."""
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    for name, seed in (("policy", 1), ("reference", 0)):
        build_tiny_model(seed).save_pretrained(tmp_path / name)
        build_tiny_tokenizer().save_pretrained(tmp_path / name)
    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = 8
    scenario.generation.max_new_tokens = 6
    inputs = AlignmentInputs({"path": str(tmp_path / "reference")}, 0, lambda: None, 0)
    trained = []

    def run_alignment(*args, **kwargs):
        trained.append(kwargs["name"])
        return StageResult("finished", str(tmp_path / "policy"), [{"loss": 0.4}])

    monkeypatch.setattr(stages, "run_alignment", run_alignment)

    def run(trial_id: str, results: str) -> dict:
        reported = []

        def report(metrics: dict) -> None:  # with whether the records were there already
            path = records_path(results, "tiny", "dpo", trial_id)
            reported.append(metrics | {"records_at_report": storage.exists(path)})

        fake_tune = SimpleNamespace(
            get_context=lambda: SimpleNamespace(get_trial_id=lambda: trial_id), report=report
        )
        monkeypatch.setattr(trial_module, "tune", fake_tune)
        trial_module.trial_driver(dict(CONFIG), scenario=scenario, inputs=inputs, results=results)
        assert len(reported) == 1
        return reported[0]

    run.trained = trained
    return run


def test_a_finished_trial_has_its_records_and_a_rerun_keeps_them(driver, results):
    report = driver("t-0", results)
    assert report["status"] == "finished", report["error"]
    assert "records" not in report  # records never travel through Tune
    assert report["records_at_report"]  # written before the report
    table = read_records(results, "tiny", "dpo", "t-0")
    assert table is not None and table.num_rows == 8
    verdicts = table.column("verdict").to_pylist()
    assert sum(verdicts) / len(verdicts) == pytest.approx(report["quality"], abs=1e-12)
    kl = table.column("kl_k1").to_pylist()
    assert sum(kl) / len(kl) == pytest.approx(report["kl"], abs=1e-12)

    # the callback writes the row after the report; a --resume that starts the trial
    # again re-reports that row and leaves the records as they were
    write_row(results, "tiny", {**CONFIG, "trial_id": "t-0", "status": "finished",
                                "quality": report["quality"], "kl": report["kl"]})
    fs, inner = storage.filesystem(records_path(results, "tiny", "dpo", "t-0"))
    written = fs.get_file_info(inner).mtime
    again = driver("t-0", results)
    assert again[trial_module.REUSED] is True and driver.trained == [driver.trained[0]]
    assert fs.get_file_info(inner).mtime == written
    assert read_records(results, "tiny", "dpo", "t-0").equals(table)


def test_a_failed_evaluation_reports_its_row_and_writes_no_records(driver, results, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("judge unreachable")

    monkeypatch.setattr(trial_module, "evaluate_trial", broken)
    report = driver("t-1", results)
    assert report["status"] == "failed"
    assert report["error"] == "evaluation: RuntimeError: judge unreachable"
    assert math.isnan(report["quality"]) and report["checkpoint_path"]
    assert not report["records_at_report"]
    assert read_records(results, "tiny", "dpo", "t-1") is None
