"""An intermediate evaluation (raydaa.evaluate.intermediate) measures a loaded policy on the
first prompts with the final evaluation's yardstick. Checked on two saved tiny models
(policy seed 1, reference seed 0), 12 evaluation prompts, a subset of 5, 6 new tokens:
its numbers are recomputed here from the lower-level pieces (the sampler with the
scenario's settings and seed, the gold judge against the first 5 of the full set's cached
baseline answers, k1 from the two models' log-probs)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from raydaa.config.scenario import load_scenario
from raydaa.data.preflight import validation_set
from raydaa.data.tokenize import load_tokenizer
from raydaa.evaluate.generation import render_prompts, sample
from raydaa.evaluate.intermediate import IntermediateEvaluation
from raydaa.evaluate.judges import GoldJudge
from raydaa.evaluate.kl import completion_logps
from raydaa.evaluate.policy import eval_model

FULL, SUBSET = 12, 5


@pytest.fixture
def setup(tmp_path, monkeypatch):
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    monkeypatch.setenv("RAYDAA_CACHE", str(tmp_path / "cache"))
    for name, seed in (("policy", 1), ("reference", 0)):
        build_tiny_model(seed).save_pretrained(tmp_path / name)
        build_tiny_tokenizer().save_pretrained(tmp_path / name)
    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = FULL
    scenario.generation.max_new_tokens = 6
    scenario.intermediate_eval.eval_every = 4
    scenario.intermediate_eval.eval_subset_prompts = SUBSET
    return scenario, tmp_path


def test_the_subset_is_measured_on_the_final_yardstick(setup):
    scenario, root = setup
    reference = str(root / "reference")
    evaluation = IntermediateEvaluation(scenario, reference)
    policy = eval_model(str(root / "policy"), scenario)
    metrics = evaluation.evaluate(policy)
    assert metrics["eval_prompts"] == SUBSET and "eval_setup_seconds" in metrics

    # the baseline answers were sampled once for the full set, and the subset took the first
    cache = json.loads(Path(f"{reference}.baseline_samples.json").read_text())
    assert len(cache["texts"]) == FULL
    tokenizer = load_tokenizer(scenario)
    prompts = [r["prompt"] for r in validation_set(scenario).rows][:SUBSET]
    ids = render_prompts(prompts, tokenizer, conversational=True)
    samples = sample(policy, tokenizer, ids, scenario.generation, seed=scenario.seed,
                     batch_tokens=scenario.resources.batch_tokens)
    verdicts = GoldJudge().compare(prompts, samples.texts, cache["texts"][:SUBSET])
    assert metrics["quality"] == pytest.approx(sum(verdicts) / SUBSET, abs=1e-12)
    pad = tokenizer.pad_token_id
    k1 = (completion_logps(policy, ids, samples.completion_ids, pad)
          - completion_logps(eval_model(reference, scenario), ids, samples.completion_ids, pad))
    assert metrics["kl"] == pytest.approx(float(k1.mean()), abs=1e-9)
    assert "records" not in metrics  # per-prompt records belong to the final evaluation

    again = evaluation.evaluate(policy)  # the reference stays loaded: no setup the 2nd time
    assert "eval_setup_seconds" not in again
    assert (again["quality"], again["kl"]) == (metrics["quality"], metrics["kl"])
    assert pickle.loads(pickle.dumps(evaluation))._prepared is None  # shipped without models
    assert evaluation.describe(again).startswith(f"evaluation on {SUBSET} prompts: quality ")
