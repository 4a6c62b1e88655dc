"""One loss configuration: LossConfig travels whole to the loss, and everything that lists
the loss's fields (trial config keys, store columns, `raydaa align` flags) derives from it."""

import argparse
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from raydaa.cli.options import add_loss_options
from raydaa.config.scenario import load_scenario
from raydaa.config.search_space import CONFIG_KEYS, AlignConfig, load_method_space
from raydaa.io.results_store import SCHEMA
from raydaa.losses import LOSS_FIELDS, METHODS, LossConfig, preference_loss
from raydaa.sweep.callbacks import ResultsStoreCallback


def test_every_loss_field_is_a_config_key_a_store_column_and_an_align_flag():
    parser = argparse.ArgumentParser()
    add_loss_options(parser)
    dests = {action.dest for action in parser._actions}
    assert set(LOSS_FIELDS) == {f.name for f in dataclasses.fields(LossConfig)}
    assert set(LOSS_FIELDS) <= set(CONFIG_KEYS)
    assert set(LOSS_FIELDS) <= set(SCHEMA.names)
    assert set(LOSS_FIELDS) <= dests
    args = parser.parse_args(["--method", "orpo", "--beta", "0.5", "--lambda", "0.2", "--sft-weight", "1"])
    assert LossConfig.from_mapping(vars(args)) == LossConfig("orpo", 0.5, lambda_=0.2, sft_weight=1.0)


def test_simpo_without_a_ratio_runs_and_records_the_default():
    """The loss runs SimPO with γ/β 0.5 when none is given; the config says so too, so the
    row records 0.5 (not None), and other methods record None (they read no γ/β)."""
    simpo = AlignConfig.from_config({"method": "simpo", "beta": 2.0, "lr": 1e-4})
    assert simpo.loss.gamma_beta_ratio == 0.5 and simpo.as_dict()["gamma_beta_ratio"] == 0.5
    dpo = AlignConfig.from_config({"method": "dpo", "beta": 0.1, "lr": 1e-4, "gamma_beta_ratio": None})
    assert dpo.as_dict()["gamma_beta_ratio"] is None
    with pytest.raises(ValueError, match="gamma_beta_ratio: only simpo takes it"):
        LossConfig("dpo", 0.1, gamma_beta_ratio=0.5)


def test_the_store_row_is_what_the_loss_ran_with():
    scenario = load_scenario("tiny")
    trial = SimpleNamespace(config={"method": "simpo", "beta": 2.0, "lr": 1e-4, "epochs": None},
                            trial_id="t1")
    row = ResultsStoreCallback("unused", scenario)._row(trial, {"status": "finished"})
    assert row["gamma_beta_ratio"] == 0.5 and row["lambda_"] == 1.0 and row["sft_weight"] == 0.0
    assert row["normalization"] == "paper" and row["epochs"] == scenario.align.epochs


@pytest.mark.parametrize("method", METHODS)
def test_a_whole_config_gives_the_same_loss_as_its_keywords(method):
    torch.manual_seed(0)
    logps = [-torch.rand(4) * 5 - 0.1 for _ in range(4)]
    config = LossConfig(method, 0.7, lambda_=0.5, sft_weight=0.3)
    whole = preference_loss(config, *logps)
    extras = {"gamma_beta_ratio": 0.5} if method == "simpo" else {}
    keywords = preference_loss(method, *logps, beta=0.7, lambda_=0.5, sft_weight=0.3, **extras)
    torch.testing.assert_close(whole.losses, keywords.losses, rtol=0, atol=0)
    with pytest.raises(TypeError, match="not both"):
        preference_loss(config, *logps, beta=0.7)


@pytest.mark.parametrize("bad", [{"beta": 0.0}, {"beta": math.nan}, {"lambda_": 0.0},
                                 {"sft_weight": -1.0}, {"normalization": "median"}])
def test_a_bad_field_is_refused_by_name(bad):
    (key,) = bad
    with pytest.raises(ValueError, match=key):
        LossConfig(**({"method": "dpo", "beta": 0.1} | bad))


def test_each_grid_point_of_every_shipped_space_is_a_valid_loss_config():
    scenario = load_scenario("tiny")
    for method in METHODS:
        for point in load_method_space(method, scenario).grid():
            assert AlignConfig.from_config(point).as_dict() == {k: point[k] for k in CONFIG_KEYS}
