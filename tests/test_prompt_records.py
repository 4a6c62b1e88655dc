"""Per-prompt evaluation records: the file contract (round trip on a directory and on a
real S3 server, schema errors), and what `evaluate_policy` puts in them on tiny models:
each column checked against an independent computation."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest
import torch

from raydaa.io.prompt_records import RECORDS_SCHEMA, read_records, records_path, write_records
from raydaa.io.results_store import read_store, write_row


def record(i: int, **changes) -> dict:
    return {
        "prompt_id": i, "source": "validation", "prompt": json.dumps(f"sort {i} 1"),
        "policy_text": f"1 {i}", "baseline_text": f"{i} 1", "policy_tokens": 3,
        "baseline_tokens": 2, "verdict": 1.0, "kl_k1": 0.25 * i, "kl_k3": 0.01 * i,
        "probe_logp": -3.5,
    } | changes  # fmt: skip


@pytest.fixture
def results(storage_root):
    return storage_root


def test_records_round_trip_beside_the_store(results):
    """Written and read back unchanged (None in a float column is NaN, in an int column
    null); the file is outside store/, so the store still reads as rows only."""
    rows = [record(0), record(1, verdict=None, baseline_text=None, baseline_tokens=None)]
    path = write_records(results, "tiny", "dpo", "t-1", rows)
    assert path == records_path(results, "tiny", "dpo", "t-1")
    assert path.endswith("/tiny/prompts/dpo/t-1.parquet")
    table = read_records(results, "tiny", "dpo", "t-1")
    assert table.schema == RECORDS_SCHEMA
    back = table.to_pylist()
    assert back[0] == record(0)
    assert math.isnan(back[1]["verdict"]) and back[1]["baseline_tokens"] is None
    assert back[1]["baseline_text"] is None and back[1]["kl_k1"] == 0.25
    # a rerun replaces the trial's records; a table is accepted as well as dicts
    write_records(results, "tiny", "dpo", "t-1", pa.Table.from_pylist([record(5)]))
    assert read_records(results, "tiny", "dpo", "t-1").column("prompt_id").to_pylist() == [5]
    assert read_records(results, "tiny", "dpo", "t-2") is None
    write_row(results, "tiny", {"trial_id": "t-1", "method": "dpo", "status": "finished"})
    assert read_store(results, "tiny").column("trial_id").to_pylist() == ["t-1"]


def test_schema_errors_name_the_column(tmp_path):
    with pytest.raises(KeyError, match=r"record 1: unknown records column\(s\) \['judge_note'\]"):
        write_records(tmp_path, "tiny", "dpo", "t", [record(0), record(1, judge_note="x")])
    incomplete = record(0)
    del incomplete["probe_logp"]
    with pytest.raises(KeyError, match=r"missing records column\(s\) \['probe_logp'\]"):
        write_records(tmp_path, "tiny", "dpo", "t", [incomplete])
    with pytest.raises(KeyError, match=r"table: missing records column\(s\) \['verdict'\]"):
        write_records(tmp_path, "tiny", "dpo", "t", pa.Table.from_pylist([record(0)]).drop(["verdict"]))
    with pytest.raises(TypeError, match="column 'prompt' wants a string .the prompt as JSON text"):
        write_records(tmp_path, "tiny", "dpo", "t", [record(0, prompt=[{"role": "user"}])])
    with pytest.raises(TypeError, match="column 'kl_k1' wants a number"):
        write_records(tmp_path, "tiny", "dpo", "t", [record(0, kl_k1="big")])
    with pytest.raises(ValueError, match="trial_id usable as a file name"):
        write_records(tmp_path, "tiny", "dpo", "../t", [record(0)])
    assert not (tmp_path / "tiny").exists()  # nothing written by a refused call


def tiny_scenario(prompts: int = 8):
    from raydaa.config.scenario import load_scenario

    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = prompts
    scenario.generation.max_new_tokens = 6
    return scenario


def save_tiny(path, seed: int) -> str:
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    build_tiny_model(seed).save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_evaluation_records_are_the_policy_the_baseline_and_their_verdicts(tmp_path):
    """Two different tiny models (policy seed 1, reference seed 0): per prompt, the policy
    column is the policy's own seeded sample, the baseline column the reference's cached
    sample, the verdict the gold judge's on that pair, k1/k3 the log-ratio of that sample,
    probe_logp the policy's log-prob of the baseline's tokens; their means are the
    metrics. Fails if policy and baseline texts are swapped, or the k1/k3 are in another
    order than the prompts."""
    from raydaa.data.preflight import validation_set
    from raydaa.data.tokenize import load_tokenizer
    from raydaa.evaluate.generation import render_prompts, sample
    from raydaa.evaluate.kl import completion_logps
    from raydaa.evaluate.policy import eval_model, evaluate_policy
    from raydaa.scenarios import gold_prefers

    scenario = tiny_scenario()
    policy, reference = save_tiny(tmp_path / "policy", 1), save_tiny(tmp_path / "ref", 0)
    metrics = evaluate_policy(policy, reference, scenario)
    records = metrics.pop("records")
    assert all(isinstance(v, int | float | str) for v in metrics.values())  # the rest: scalars

    tokenizer = load_tokenizer(scenario)
    validation = validation_set(scenario)
    prompts = [r["prompt"] for r in validation.rows]
    ids = render_prompts(prompts, tokenizer, validation.conversational)
    model, ref = eval_model(policy, scenario), eval_model(reference, scenario)
    own = sample(model, tokenizer, ids, scenario.generation, seed=scenario.seed)
    baseline = json.loads((tmp_path / "ref.baseline_samples.json").read_text())["texts"]
    assert own.texts != baseline  # two models: the test tells the columns apart
    pad = tokenizer.pad_token_id
    d = completion_logps(model, ids, own.completion_ids, pad) - completion_logps(
        ref, ids, own.completion_ids, pad
    )
    probe_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in baseline]
    probe = completion_logps(model, ids, probe_ids, pad)

    assert [r["prompt_id"] for r in records] == list(range(len(prompts)))
    assert {r["source"] for r in records} == {"validation"}
    for i, r in enumerate(records):
        assert json.loads(r["prompt"]) == prompts[i]
        assert r["policy_text"] == own.texts[i] and r["baseline_text"] == baseline[i]
        assert r["policy_tokens"] == len(own.completion_ids[i])
        assert r["baseline_tokens"] == len(probe_ids[i])
        assert r["verdict"] == gold_prefers(prompts[i], own.texts[i], baseline[i])
        assert r["kl_k1"] == pytest.approx(d[i].item(), abs=1e-5)
        assert r["kl_k3"] == pytest.approx(math.expm1(-d[i].item()) + d[i].item(), abs=1e-5)
        assert r["probe_logp"] == pytest.approx(probe[i].item(), abs=1e-5)
    mean = lambda key: sum(r[key] for r in records) / len(records)  # noqa: E731
    assert mean("verdict") == pytest.approx(metrics["quality"], abs=1e-12)
    assert mean("kl_k1") == pytest.approx(metrics["kl"], abs=1e-12)
    assert mean("kl_k3") == pytest.approx(metrics["kl_k3"], abs=1e-12)
    write_records(tmp_path / "results", "tiny", "dpo", "t", records)  # fits the schema


def test_a_judge_prompt_set_adds_judge_rows_without_kl(tmp_path):
    """With `judge.prompts`, validation rows keep KL and no verdict; the judge's own
    prompts are rows of source "judge" with a verdict against their chosen answer and no
    KL. Both are numbered from 0 in their own set."""
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.scenarios import gold_prefers

    scenario = tiny_scenario(prompts=6)
    scenario.judge.prompts, scenario.judge.prompts_split = "tiny:pref_val", "train"
    scenario.judge.baseline, scenario.judge.num_prompts = "chosen", 4
    policy = save_tiny(tmp_path / "policy", 1)
    metrics = evaluate_policy(policy, policy, scenario)
    records = metrics["records"]
    validation = [r for r in records if r["source"] == "validation"]
    judged = [r for r in records if r["source"] == "judge"]
    assert [r["prompt_id"] for r in validation] == list(range(6))
    assert [r["prompt_id"] for r in judged] == list(range(4))
    for r in validation:
        assert math.isnan(r["verdict"]) and r["baseline_text"] is None
        assert math.isfinite(r["kl_k1"]) and r["kl_k1"] == 0.0  # policy = reference here
    for r in judged:
        assert math.isnan(r["kl_k1"]) and math.isnan(r["kl_k3"])
        prompt = json.loads(r["prompt"])
        assert r["verdict"] == gold_prefers(prompt, r["policy_text"], r["baseline_text"])
        assert math.isfinite(r["probe_logp"]) and r["probe_logp"] < 0
    assert sum(r["verdict"] for r in judged) / 4 == pytest.approx(metrics["quality"])
    write_records(tmp_path / "results", "tiny", "dpo", "t", records)


def test_per_prompt_kl_is_what_the_estimates_average():
    from raydaa.evaluate.kl import kl_estimates, kl_per_prompt

    pi, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.5, -0.5])
    per = kl_per_prompt(pi, ref)
    assert per["k1"].tolist() == [0.5, -0.5, 0.0]
    assert per["k3"].tolist() == pytest.approx([math.exp(-0.5) - 1 + 0.5, math.exp(0.5) - 1 - 0.5, 0.0])
    est = kl_estimates(pi, ref)
    assert est["k1"].mean == pytest.approx(per["k1"].mean().item())
    assert est["k3"].mean == pytest.approx(per["k3"].mean().item())
