"""Behaviour that no other test held: each test here was checked to fail on the small
change its docstring names (a reviewer's mutation), with the code otherwise unchanged."""

from __future__ import annotations

import json
import math

import pytest
import torch

from raydaa.core.losses import METHODS, LossConfig, get_spec, uses_length_normalization
from raydaa.data.check import data_check_main
from raydaa.report.select import best_row


def test_mean_normalization_always_divides_by_the_completion_length():
    """Fails if `mean` is treated as `sum` (no normalisation) in raydaa/losses.py."""
    for method in METHODS:
        assert uses_length_normalization(method, "mean") is True, method
        assert uses_length_normalization(method, "sum") is False, method
    # the methods whose own recipe does not normalise: `mean` must still switch it on
    unnormalised = [m for m in METHODS if not get_spec(m).original_length_normalized]
    assert unnormalised, "paper Table 3 has methods without length normalisation"
    for method in unnormalised:
        assert uses_length_normalization(method, "original") is False


def test_mean_normalization_reaches_the_objective_on_a_real_model():
    """The objective under `mean` sees log π / |y| of a real forward pass (SimPO: no
    reference needed), exactly the `sum` log-probs divided by the completion lengths."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from raydaa.data.collators import PreferenceCollator
    from raydaa.data.tokenize import IGNORE_INDEX
    from raydaa.train.objectives import PreferenceObjective

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model = AutoModelForCausalLM.from_config(config).eval()
    rows = [  # prompt of 3 tokens, completions of 2 and 4 tokens
        {"index": 0, "chosen_input_ids": [1, 5, 6, 7, 8], "rejected_input_ids": [1, 5, 6, 9, 10, 11, 12],
         "chosen_labels": [IGNORE_INDEX] * 3 + [7, 8],
         "rejected_labels": [IGNORE_INDEX] * 3 + [9, 10, 11, 12]},
    ]
    batch = PreferenceCollator(pad_token_id=0)(rows)
    with torch.no_grad():
        _, summed = PreferenceObjective(LossConfig("simpo", 2.0, normalization="sum"))(model, batch)
        _, mean = PreferenceObjective(LossConfig("simpo", 2.0, normalization="mean"))(model, batch)
    assert mean["logps/chosen"] == pytest.approx(summed["logps/chosen"] / 2, rel=1e-6)
    assert mean["logps/rejected"] == pytest.approx(summed["logps/rejected"] / 4, rel=1e-6)


def write_pairs(path, n_good: int, n_bad: int) -> None:
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for i in range(n_good)]
    rows += [{"prompt": f"question {n_good + i}", "chosen": f"good {i}"} for i in range(n_bad)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_data_check_exit_code_at_exactly_the_threshold(tmp_path, capsys):
    """1 bad row in 10 = 10%: within a 10% threshold (exit 0), above 9.99% (exit 1).
    Fails if the comparison becomes >= or the exit codes swap."""
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, n_good=9, n_bad=1)
    assert data_check_main(str(path), 0.10) == 0
    assert "=> ok: 10.00% bad (within the 10.00% threshold)" in capsys.readouterr().out
    assert data_check_main(str(path), 0.0999) == 1
    assert "=> REFUSED: 10.00% bad (above the 9.99% threshold)" in capsys.readouterr().out


def row(trial_id, quality, kl):
    return {"trial_id": trial_id, "status": "finished", "quality": quality, "kl": kl,
            "method": "dpo"}


def test_a_nan_kl_never_wins_the_tie_break():
    """Equal quality: the finite KL wins whichever order the rows come in and whatever
    the trial ids; fails if a NaN KL sorts as small (e.g. `kl if kl is not None`)."""
    finite, nan = row("t2", 0.6, 0.8), row("t1", 0.6, math.nan)
    assert best_row([finite, nan])["trial_id"] == "t2"
    assert best_row([nan, finite])["trial_id"] == "t2"
    assert best_row([row("t1", 0.6, None), finite])["trial_id"] == "t2"
    # a better quality still wins over any KL, NaN included
    assert best_row([finite, row("t0", 0.7, math.nan)])["trial_id"] == "t0"
    # equal quality and KL: the smaller trial id, deterministically
    assert best_row([row("b", 0.6, 0.8), row("a", 0.6, 0.8)])["trial_id"] == "a"


@pytest.mark.slow
def test_the_yardstick_ranks_an_untrained_model_below_its_sft_reference(tiny_sft):
    """The trial evaluation, end to end: the untrained base model judged against the SFT
    reference's samples loses by far and is far from it; the SFT policy against itself
    scores 0.5 with KL 0. Fails if the judge's answers are swapped (quality 1 - q) or
    the KL is computed with policy and reference exchanged (k1 turns negative)."""
    from raydaa.evaluate.policy import evaluate_policy

    scenario, base, sft = tiny_sft
    far = evaluate_policy(base, sft, scenario)
    assert far["quality_high"] < 0.3, far  # loses on (almost) every prompt
    assert far["kl_low"] > 1.0 and far["kl_k3"] > 1.0, far  # clearly away from π_ref
    same = evaluate_policy(sft, sft, scenario)
    assert same["quality"] == pytest.approx(0.5, abs=0.05), same
    assert abs(same["kl"]) < 1e-6 and abs(same["kl_k3"]) < 1e-6, same
