"""Readable trial / run names: what the dashboard, Tune's table and trial dirs show."""

from raydaa.sweep.telemetry import trial_name


def test_two_stage_names_carry_method_beta_and_lr():
    config = {"method": "dpo", "beta": 0.01, "lr": 5e-7, "lambda_": 1.0, "sft_weight": 0.0}
    assert trial_name(config | {"epochs": 1}, "7a2b1_00003") == "dpo-b0.01-lr5e-07-7a2b1_00003"


def test_single_stage_names_add_lambda_sft_weight_and_epochs():
    config = {"method": "orpo", "beta": 1.0, "lr": 8e-6, "lambda_": 0.2, "sft_weight": 1.0}
    name = trial_name(config | {"epochs": 2}, "x_00000")
    assert name == "orpo-b1-lr8e-06-l0.2-sft1-ep2-x_00000"
