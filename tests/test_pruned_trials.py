"""Pruned trials (a Tune scheduler stopped them mid-training): how they are told from
finished ones, the row they leave, a `--resume` that meets their row, whether a sweep
counts them as ended, and how the report treats them. Tune's calls are made directly
with the results Tune would hand over (the real sweep: tests/test_early_stopping.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from raydaa.config.scenario import load_scenario
from raydaa.io.results_store import read_row, write_row
from raydaa.report.analysis import analyse
from raydaa.report.build import render_markdown
from raydaa.report.select import best_row, load_rows, status_counts
from raydaa.report.tables import failures_table, pruned_table, summary_table
from raydaa.sweep import trial as trial_module
from raydaa.sweep.callbacks import ResultsStoreCallback, row_line
from raydaa.sweep.pruning import has_ended, is_intermediate, stop_reason
from raydaa.sweep.search import trial_ended
from raydaa.train import stages
from raydaa.train.timeline import PHASES

CONFIG = {"method": "dpo", "beta": 0.1, "lr": 1e-4}
# What Tune holds as the last result of a trial stopped at its evaluation of step 8: the
# training loop's report of that step, the evaluation's metrics, what the forwarding
# callback adds, and Tune's own keys.
STOPPED_AT_8 = {
    "step": 8, "status": "running", "loss": 0.61, "rewards/accuracy": 0.7, "tokens_seen": 4096,
    "peak_rss_mib": 900.0, "quality": 0.40625, "quality_low": 0.24, "quality_high": 0.57,
    "kl": 0.12, "kl_low": 0.05, "kl_high": 0.19, "kl_k3": 0.11, "eval_prompts": 32,
    "eval_seconds": 2.5, "reference_path": "/ref", "reference_cache": "/cache",
    "time_total_s": 30.0, "training_iteration": 1, "trial_id": "t1",
}  # fmt: skip
FINAL = {
    "step": 47, "status": "finished", "error": "", "quality": 0.6, "quality_low": 0.55,
    "quality_high": 0.65, "kl": 0.8, "kl_low": 0.7, "kl_high": 0.9, "kl_k3": 0.7,
    "eval_prompts": 200, "final_loss": 0.5, "checkpoint_path": "/runs/x/hf",
    "device_seconds": 80.0, "trial_id": "t2",
}  # fmt: skip


def tune_trial(trial_id, last_result):
    return SimpleNamespace(config=dict(CONFIG), trial_id=trial_id, last_result=last_result)


def test_an_intermediate_result_is_still_training_with_a_quality_at_a_step():
    assert is_intermediate(STOPPED_AT_8)
    assert not is_intermediate(FINAL)
    assert not is_intermediate({**STOPPED_AT_8, "quality": math.nan})
    assert not is_intermediate({k: v for k, v in STOPPED_AT_8.items() if k != "step"})
    assert not is_intermediate({"step": 7, "status": "running", "loss": 0.6})  # a training step
    assert not is_intermediate(None)
    assert stop_reason("asha", STOPPED_AT_8) == "stopped by asha at step 8 (quality 0.406 on 32 prompts)"
    assert stop_reason(None, STOPPED_AT_8).startswith("stopped by the Tune scheduler at step 8")


def test_a_trial_stopped_mid_training_is_a_pruned_row(tmp_path, capsys):
    scenario = load_scenario("tiny")
    callback = ResultsStoreCallback(str(tmp_path), scenario, "asha")
    callback.on_trial_complete(1, [], tune_trial("t1", dict(STOPPED_AT_8)))
    row = read_row(tmp_path, "tiny", "dpo", "t1")
    assert row["status"] == "pruned"
    assert row["error"] == "stopped by asha at step 8 (quality 0.406 on 32 prompts)"
    for key in ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3",
                "tokens_seen", "peak_rss_mib", "eval_prompts", "reference_path", "reference_cache"):
        assert row[key] == STOPPED_AT_8[key], key
    assert (row["eval_step"], row["final_loss"], row["reward_accuracy"]) == (8, 0.61, 0.7)
    assert row["device_seconds"] == 30.0 * scenario.resources.num_workers
    assert row["checkpoint_path"] == "" and row["diverged_step"] is None
    # where its time went: only its last intermediate evaluation's time is known; the
    # phases a trial's end measures (launch ... teardown) are null, never made up
    assert row["eval_seconds"] == 2.5
    assert all(row[key] is None for key in PHASES if key != "eval_seconds")
    assert capsys.readouterr().out.strip().endswith(
        "pruned: stopped by asha at step 8 (quality 0.406 on 32 prompts)")


def test_a_finished_trial_keeps_its_final_result(tmp_path):
    callback = ResultsStoreCallback(str(tmp_path), load_scenario("tiny"), "asha")
    callback.on_trial_complete(1, [], tune_trial("t2", dict(FINAL)))
    row = read_row(tmp_path, "tiny", "dpo", "t2")
    assert (row["status"], row["error"], row["eval_step"], row["eval_prompts"]) == (
        "finished", "", 47, 200)
    assert row["checkpoint_path"] == "/runs/x/hf" and row["final_loss"] == 0.5
    # a failed run reports no quality: no step was evaluated
    callback.on_trial_complete(1, [], tune_trial("t3", {**FINAL, "status": "failed",
                                                       "quality": math.nan, "step": 0}))
    assert read_row(tmp_path, "tiny", "dpo", "t3")["eval_step"] is None


def test_a_trial_that_errored_after_an_evaluation_is_failed_not_pruned(tmp_path):
    callback = ResultsStoreCallback(str(tmp_path), load_scenario("tiny"), "asha")
    callback.on_trial_error(1, [], tune_trial("t4", dict(STOPPED_AT_8)))
    row = read_row(tmp_path, "tiny", "dpo", "t4")
    assert row["status"] == "failed" and row["error"] == "trial driver crashed"


def test_resume_re_reports_a_pruned_row_as_tune_last_saw_it(tmp_path, monkeypatch):
    """The row was written but the sweep was killed before Tune saved that the trial
    ended: `--resume` starts the trial again, and its driver reports the stored row (as an
    intermediate result, the shape a scheduler's stop left it in) without training."""
    write_row(tmp_path, "tiny", {**CONFIG, "trial_id": "t1", "status": "pruned",
                                 "error": "stopped by asha at step 8 (quality 0.406 on 32 prompts)",
                                 "quality": 0.40625, "kl": 0.12, "eval_step": 8,
                                 "eval_prompts": 32})  # fmt: skip
    trained, reported = [], []
    monkeypatch.setattr(stages, "run_alignment", lambda *a, **k: trained.append(k))
    monkeypatch.setattr(trial_module, "tune", SimpleNamespace(
        get_context=lambda: SimpleNamespace(get_trial_id=lambda: "t1"), report=reported.append))
    trial_module.trial_driver(dict(CONFIG), scenario=load_scenario("tiny"), inputs=None,
                              results=str(tmp_path))
    assert trained == [] and len(reported) == 1
    result = reported[0]
    assert (result["status"], result["step"], result["quality"], result["eval_prompts"]) == (
        "running", 8, 0.40625, 32)
    assert result["error"].startswith("stopped by asha") and result[trial_module.REUSED]
    assert is_intermediate(result)
    # the store callback leaves the stored row as it is
    before = read_row(tmp_path, "tiny", "dpo", "t1")
    ResultsStoreCallback(str(tmp_path), load_scenario("tiny"), "asha").on_trial_complete(
        1, [], tune_trial("t1", result))
    assert read_row(tmp_path, "tiny", "dpo", "t1") == before


def test_a_sweep_counts_pruned_trials_as_ended_and_interrupted_ones_not(tmp_path):
    assert has_ended(FINAL, None) and has_ended({"status": "diverged"}, None)
    assert not has_ended(None, None) and not has_ended({}, None)
    assert not has_ended(STOPPED_AT_8, None)  # Ctrl-C mid-training: no row
    assert has_ended(STOPPED_AT_8, "pruned")
    assert not trial_ended(STOPPED_AT_8, str(tmp_path), "tiny", "dpo")
    write_row(tmp_path, "tiny", {**CONFIG, "trial_id": "t1", "status": "pruned"})
    assert trial_ended(STOPPED_AT_8, str(tmp_path), "tiny", "dpo")
    assert trial_ended(FINAL, str(tmp_path), "tiny", "dpo")


def report_rows():
    base = {"scenario": "tiny", "method": "dpo", "lambda_": 1.0, "sft_weight": 0.0,
            "gamma_beta_ratio": 0.5, "epochs": 1, "normalization": "paper", "seed": 0}
    return [
        base | {"trial_id": "f1", "beta": 0.1, "lr": 1e-4, "status": "finished", "quality": 0.6,
                "quality_low": 0.55, "quality_high": 0.65, "kl": 0.8, "eval_step": 47,
                "eval_prompts": 200, "error": ""},
        # a higher quality than the finished row, on 32 prompts at step 8: never the best
        base | {"trial_id": "p1", "beta": 0.5, "lr": 1e-4, "status": "pruned", "quality": 0.75,
                "quality_low": 0.6, "quality_high": 0.9, "kl": 0.1, "eval_step": 8,
                "eval_prompts": 32, "error": "stopped by asha at step 8 (quality 0.75 on 32 prompts)"},
        base | {"trial_id": "x1", "beta": 1.0, "lr": 1e-4, "status": "failed", "quality": math.nan,
                "kl": math.nan, "error": "evaluation: RuntimeError: judge crashed"},
    ]  # fmt: skip


def test_the_report_counts_and_lists_pruned_rows_and_never_ranks_them(tmp_path):
    for row in report_rows():
        write_row(tmp_path, "tiny", row)
    rows = load_rows(tmp_path, "tiny")  # status pruned is a known status
    assert best_row(rows)["trial_id"] == "f1"
    assert status_counts(rows) == {"finished": 1, "failed": 1, "diverged": 0, "pruned": 1,
                                   "total": 3}
    analysis = analyse(rows)
    (dpo,) = analysis.variants
    assert [p["trial_id"] for p in dpo.points] == ["f1"]  # fronts and β curves: finished only
    keys, records = summary_table(analysis)
    summary = dict(zip(keys, [records[0][k] for k in keys], strict=True))
    assert (summary["trial_id"], summary["pruned"], summary["total"]) == ("f1", 1, 3)
    assert [r["trial_id"] for r in failures_table(analysis)[1]] == ["x1"]
    (pruned,) = pruned_table(analysis)[1]
    assert (pruned["trial_id"], pruned["eval_step"], pruned["eval_prompts"], pruned["quality"]) == (
        "p1", 8, 32, 0.75)
    markdown = render_markdown(analysis, "tiny", "store", ["a", "b", "c"])
    assert "(1 finished, 1 failed, 0 diverged, 1 pruned)" in markdown
    section = markdown.split("## Pruned trials", 1)[1]
    assert "| dpo | p1 | 0.5 | 0.0001 | 8 | 32 | 0.750 [0.600, 0.900] | 0.100 | stopped by asha" \
           in section
    assert "p1" not in markdown.split("## Failed and diverged trials", 1)[1].split("## Pruned")[0]


def test_a_report_without_pruned_rows_has_no_pruned_section(tmp_path):
    rows = [r for r in report_rows() if r["status"] != "pruned"]
    markdown = render_markdown(analyse(rows), "tiny", "store", ["a", "b", "c"])
    assert "## Pruned trials" not in markdown and "0 pruned" in markdown


@pytest.mark.parametrize("status", ["finished", "pruned"])
def test_row_line_says_why_a_trial_was_pruned(status):
    row = {"status": status, "quality": 0.5, "kl": 0.1, "error": "stopped by asha at step 8"}
    expected = "finished, quality 0.5, KL 0.1" if status == "finished" else (
        "pruned: stopped by asha at step 8")
    assert row_line(row) == expected
