"""Seed replicates without Ray: the training seed's path (trial config -> AlignConfig ->
the training run's settings and name -> the store row), which configurations
`raydaa replicate` picks and which seeds it still has to run, and the CLI's refusals.

The store used by the planning tests (scenario tiny, seed 0):

    trial  method β     lr    seed  status    quality  KL
    a      dpo    0.1   1e-6  0     finished  0.60     1.0   ties b, lower KL: 1st
    b      dpo    0.5   1e-6  0     finished  0.60     2.0   2nd
    c      dpo    0.01  1e-6  0     finished  0.55     0.5   3rd
    d      dpo    0.05  1e-6  0     failed    —        —     never a candidate
    e      dpo    0.5   1e-6  1     finished  0.90     2.0   b's replicate: no rank boost
    o      orpo   1.0   1e-6  0     finished  0.99     0.1   single-stage (sft_weight 1)
"""

import math
from types import SimpleNamespace

import pytest

from raydaa.cli.replicate import main as replicate_main
from raydaa.cli.search import search_main
from raydaa.config.scenario import load_scenario
from raydaa.config.search_space import CONFIG_KEYS, AlignConfig, search_rows
from raydaa.io.results_store import write_row
from raydaa.report.select import best_row
from raydaa.sweep.callbacks import ResultsStoreCallback
from raydaa.sweep.replicate import ReplicateError, plan_replicates, replicate_seeds
from raydaa.sweep.telemetry import trial_name
from raydaa.train import stages
from raydaa.train.sharding import BatchPlan

NAN = math.nan
BASE = {"lambda_": 1.0, "sft_weight": 0.0, "gamma_beta_ratio": None, "epochs": 2,
        "normalization": "paper", "scenario": "tiny"}  # fmt: skip


def row(trial, method, beta, seed, status, quality, kl, **changes):
    return BASE | {
        "trial_id": trial, "method": method, "beta": beta, "lr": 1e-6, "seed": seed,
        "status": status, "quality": quality, "kl": kl,
    } | changes  # fmt: skip


ROWS = [
    row("a", "dpo", 0.1, 0, "finished", 0.60, 1.0),
    row("b", "dpo", 0.5, 0, "finished", 0.60, 2.0),
    row("c", "dpo", 0.01, 0, "finished", 0.55, 0.5),
    row("d", "dpo", 0.05, 0, "failed", NAN, NAN),
    row("e", "dpo", 0.5, 1, "finished", 0.90, 2.0),
    row("o", "orpo", 1.0, 0, "finished", 0.99, 0.1, sft_weight=1.0, lambda_=0.5),
]


def plan(rows=ROWS, method="dpo", top=2, seeds=3, **kw):
    return plan_replicates(rows, method, top=top, seeds=seeds, scenario_seed=0,
                           scenario="tiny", results="/r", **kw)  # fmt: skip


# -- the seed's path into the run and the row ------------------------------------------


def test_a_trial_seed_reaches_the_training_settings_and_the_run_name(monkeypatch):
    """run_alignment hands Ray Train the config's own seed (data order: BatchPlan; the
    workers' torch.manual_seed); without one, the scenario's, as before replicates."""
    scenario = load_scenario("tiny")
    seen = []
    monkeypatch.setattr(stages, "_run", lambda settings, **kw: seen.append((settings, kw["name"])))
    inputs = stages.AlignmentInputs(reference={"path": "/ref"}, rows=1500, dataset=list,
                                    pad_token_id=0, cache="/ref/cache")  # fmt: skip
    config = {"method": "dpo", "beta": 0.1, "lr": 1e-6}
    stages.run_alignment(scenario, AlignConfig.from_config(config | {"seed": 7}), inputs)
    stages.run_alignment(scenario, AlignConfig.from_config(config), inputs)
    (replicate, name), (search, plain) = seen
    assert replicate["seed"] == 7 and search["seed"] == scenario.seed == 0
    assert name.startswith("dpo-b0.1-lr1e-06-s7-") and not plain.startswith("dpo-b0.1-lr1e-06-s")
    # and the seed changes what the run trains on: another data order from step 0
    orders = [BatchPlan(1500, global_batch_size=64, micro_batch_size=32, world_size=1, rank=0,
                        seed=s["seed"]).indices(0, 0) for s in (replicate, search)]  # fmt: skip
    assert orders[0] != orders[1]


def test_the_row_keeps_the_training_seed_and_the_name_differs_per_seed():
    scenario = load_scenario("tiny")
    callback = ResultsStoreCallback("unused", scenario)
    config = {"method": "dpo", "beta": 0.1, "lr": 1e-6, "epochs": None}
    rows = [callback._row(SimpleNamespace(config=c, trial_id="t"), {"status": "finished"})
            for c in (config | {"seed": 2}, config)]  # fmt: skip
    assert [r["seed"] for r in rows] == [2, scenario.seed]
    # the seed is not a configuration key: both rows are the same configuration
    assert {k: rows[0][k] for k in CONFIG_KEYS} == {k: rows[1][k] for k in CONFIG_KEYS}
    names = {trial_name(config | {"seed": s}, "x_00001") for s in (1, 2)}
    assert names == {"dpo-b0.1-lr1e-06-s1-x_00001", "dpo-b0.1-lr1e-06-s2-x_00001"}
    assert trial_name(config, "x_00001") == "dpo-b0.1-lr1e-06-x_00001"


def test_a_seed_must_be_a_whole_non_negative_number():
    config = {"method": "dpo", "beta": 0.1, "lr": 1e-6}
    with pytest.raises(ValueError, match="seed must be >= 0"):
        AlignConfig.from_config(config | {"seed": -1})
    assert AlignConfig.from_config(config | {"seed": 3}).training_seed(0) == 3
    assert AlignConfig.from_config(config).training_seed(5) == 5
    assert "seed" not in AlignConfig.from_config(config | {"seed": 3}).as_dict()


# -- which rows stand for a configuration ------------------------------------------------


def test_replicates_do_not_win_best_by_the_max_over_seeds():
    """e (b's configuration at seed 1, quality 0.90) would be best by the max over seeds;
    best_row looks at the search rows (each configuration at its lowest seed), where a
    (0.60, lower KL than b) is best."""
    assert max(ROWS[:5], key=lambda r: r["quality"])["trial_id"] == "e"
    kept = search_rows(ROWS)
    assert [r["trial_id"] for r in kept] == ["a", "b", "c", "d", "o"]
    assert best_row(ROWS[:5])["trial_id"] == "a"
    assert best_row(kept[:4])["trial_id"] == "a"


# -- the plan -------------------------------------------------------------------------


def test_top_k_by_quality_then_kl_and_the_seeds_after_the_search_seed():
    p = plan()
    assert [c["trial_id"] for c in p.configs] == ["a", "b"]
    assert p.seeds == [0, 1, 2] == replicate_seeds(0, 3)
    # b's seed 1 is in the store (e): only its seed 2 is left
    assert [(c["beta"], c["seed"]) for c in p.pending] == [(0.1, 1), (0.1, 2), (0.5, 2)]
    assert set(p.pending[0]) == {*CONFIG_KEYS, "seed"} and p.pending[0]["epochs"] == 2
    assert p.done == 1
    # K beyond what the store holds: every finished configuration, never the failed one
    assert [c["trial_id"] for c in plan(top=10).configs] == ["a", "b", "c"]
    assert plan(seeds=1).pending == []  # N = 1: the search's own seed, nothing to run


def test_a_failed_replicate_is_a_result_unless_retried():
    rows = [*ROWS, row("f", "dpo", 0.1, 1, "failed", NAN, NAN)]
    assert [c["seed"] for c in plan(rows, top=1).pending] == [2]
    assert [c["seed"] for c in plan(rows, top=1, retry_failed=True).pending] == [1, 2]


def test_single_stage_rows_are_not_replicated_and_no_row_is_a_clear_error():
    with pytest.raises(ReplicateError, match=r"run `raydaa search --method orpo --scenario tiny"):
        plan(method="orpo")
    with pytest.raises(ValueError, match="--top must be >= 1"):
        plan(top=0)
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        plan(seeds=0)


# -- the command line (no Ray is started: each case ends before it) ----------------------


def test_cli_refuses_bad_counts_and_a_store_without_the_method(tmp_path, capsys):
    for args in (["--seeds", "0"], ["--seeds", "2", "--top", "0"], []):
        with pytest.raises(SystemExit) as exit_:
            replicate_main(["--method", "dpo", "--results", str(tmp_path), *args])
        assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        search_main(["--method", "dpo", "--replicates", "0"])
    assert "must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused before the sweep, not after it
        search_main(["--method", "orpo", "--setup", "base_init", "--replicates", "2"])
    assert "--replicates replicates two-stage configurations" in capsys.readouterr().err
    code = replicate_main(["--method", "dpo", "--seeds", "2", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no finished two-stage dpo trial" in err
    assert f"raydaa search --method dpo --scenario tiny --results {tmp_path}" in err


def test_cli_with_every_seed_in_the_store_runs_nothing(tmp_path, capsys):
    for r in [*ROWS, row("g", "dpo", 0.1, 1, "finished", 0.50, 1.0)]:  # a's seed 1
        write_row(tmp_path, "tiny", r)
    code = replicate_main(["--method", "dpo", "--top", "2", "--seeds", "2", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "nothing to run" in out
    assert "seeds [0, 1] per configuration" in out
    assert "dpo β=0.1 lr=1e-06: quality 0.6000 (seed 0); seeds to run: none" in out
