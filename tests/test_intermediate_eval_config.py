"""The scenario's `intermediate_eval` and `early_stopping` sections: defaults, and every bad
value refused when the scenario loads, with the key named."""

from pathlib import Path

import pytest
import yaml

from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.train.settings import TrainSettings


def tiny_with(tmp_path: Path, **sections) -> Path:
    """The shipped tiny.yaml with `sections` merged into its top-level sections."""
    data = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "tiny_variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_tiny_has_intermediate_evaluation_off():
    scenario = load_scenario("tiny")
    assert scenario.intermediate_eval.eval_every is None
    assert scenario.intermediate_eval.eval_subset_prompts == 32
    assert (scenario.early_stopping.grace_period, scenario.early_stopping.reduction_factor) == (1, 3.0)


def test_valid_settings_load(tmp_path):
    scenario = load_scenario(tiny_with(
        tmp_path, intermediate_eval={"eval_every": 8, "eval_subset_prompts": 16},
        early_stopping={"grace_period": 2, "reduction_factor": 2}))  # fmt: skip
    assert scenario.intermediate_eval.eval_every == 8
    assert scenario.intermediate_eval.eval_subset_prompts == 16
    assert scenario.early_stopping.grace_period == 2
    assert scenario.early_stopping.reduction_factor == 2.0


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"intermediate_eval": {"eval_every": 0}}, "intermediate_eval: eval_every must be >= 1"),
        ({"intermediate_eval": {"eval_every": 2.5}}, "intermediate_eval: eval_every must be a whole number"),
        ({"intermediate_eval": {"eval_every": "8"}}, "intermediate_eval: eval_every must be a whole number"),
        ({"intermediate_eval": {"eval_subset_prompts": 0}},
         "intermediate_eval: eval_subset_prompts must be >= 1"),
        ({"intermediate_eval": {"every": 8}}, "intermediate_eval: unknown key(s) ['every']"),
        ({"intermediate_eval": {"eval_every": 8, "eval_subset_prompts": 201}},
         "intermediate_eval.eval_subset_prompts (201) exceeds generation.num_prompts (200)"),
        ({"intermediate_eval": {"eval_every": 8, "eval_subset_prompts": 150},
          "judge": {"num_prompts": 100}},
         "intermediate_eval.eval_subset_prompts (150) exceeds judge.num_prompts (100)"),
        ({"early_stopping": {"grace_period": 0}}, "early_stopping: grace_period must be >= 1"),
        ({"early_stopping": {"grace_period": True}}, "early_stopping: grace_period must be a whole number"),
        ({"early_stopping": {"reduction_factor": 1}}, "early_stopping: reduction_factor must be > 1"),
        ({"early_stopping": {"reduction_factor": ".nan"}},
         "early_stopping: reduction_factor must be a finite number"),
        ({"early_stopping": {"brackets": 2}}, "early_stopping: unknown key(s) ['brackets']"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(tmp_path, sections, expected):
    with pytest.raises(ConfigError) as err:
        load_scenario(tiny_with(tmp_path, **sections))
    assert expected in str(err.value)
    assert "tiny_variant.yaml" in str(err.value)


def test_intermediate_evaluation_needs_a_pairwise_judge(tmp_path):
    """A benchmark judge scores outside raydaa, after training: nothing to evaluate with
    every few steps (the scenario is tiny's with the UF scenarios' AlpacaEval judge)."""
    path = tiny_with(tmp_path, intermediate_eval={"eval_every": 8})
    data = yaml.safe_load(path.read_text())
    data["judge"] = {"type": "alpaca_eval", "baseline": "benchmark"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"intermediate_eval.eval_every needs a pairwise judge "
                                          r"\(judge.type one of .*\); judge.type alpaca_eval"):
        load_scenario(path)
    data["intermediate_eval"]["eval_every"] = None  # off: the same judge is fine
    path.write_text(yaml.safe_dump(data))
    assert load_scenario(path).judge.type == "alpaca_eval"


def test_train_settings_eval_every():
    base = {"total_steps": 10, "global_batch_size": 4}
    assert TrainSettings(**base).eval_every is None
    assert TrainSettings(**base, eval_every=3).eval_every == 3
    with pytest.raises(ValueError, match="eval_every must be >= 1 or None, got 0"):
        TrainSettings(**base, eval_every=0)
