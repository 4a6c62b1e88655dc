"""A user's own model and data, end to end through the CLI, as docs/own-model.md runs it:
a locally saved Qwen2 (not the built-in Llama) with its ChatML tokenizer, TRL-format
JSONL data and a local reward model as the judge (tests/own_model_assets.py).

`raydaa init` -> `raydaa data check` -> `raydaa search --mode optuna --num-trials 2` ->
`raydaa report`, from a working directory outside the repository, on one Ray cluster for
the module. Two fast checks first pin the fixes that model needed: ChatML's end of turn
is not followed by a second EOS, and a reward model without a pad token is scored at each
sequence's last token.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from own_model_assets import IM_END, build_all, save_reward_model, write_task_data

from raydaa.cli import main as raydaa

BETAS, LRS = [0.1, 0.5], [1.0e-3, 3.0e-3]  # random init: large steps, so KL is clearly > 0
# Sizes that keep the whole flow within a few minutes on 2 CPU cores.
SHORT_RUN = {
    "max_length": 96,
    "sft.lr": 1.0e-3,
    "sft.epochs": 2,
    "sft.global_batch_size": 32,
    "sft.micro_batch_size": 32,
    "align.global_batch_size": 64,
    "align.micro_batch_size": 32,
    "generation.max_new_tokens": 16,
    "generation.num_prompts": 16,
    "judge.num_prompts": 16,
    "watchdog.startup_timeout_s": 600,
    "watchdog.stall_timeout_s": 300,
    "grids.dpo.betas": BETAS,
    "grids.dpo.lrs": LRS,
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("own"))


def test_chatml_completion_ends_the_turn_once(assets):
    """ChatML closes a turn with `<|im_end|>` and a newline; with EOS = `<|im_end|>` (as
    Qwen2.5's instruct tokenizers) the completion must end there, as TRL tokenizes it,
    not get a second EOS after the newline."""
    from transformers import AutoTokenizer

    from raydaa.data.tokenize import prepare_preferences, prepare_sft

    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    assert tokenizer.bos_token is None and tokenizer.eos_token == IM_END
    prefs = prepare_preferences(str(assets["preference"]), tokenizer, max_length=96)
    sft = prepare_sft(str(assets["sft"]), tokenizer, max_length=96)
    completions = [r["chosen_labels"] for r in prefs.dataset] + [r["labels"] for r in sft.dataset]
    for labels in completions:
        tokens = tokenizer.convert_ids_to_tokens([t for t in labels if t >= 0])
        assert tokens.count(IM_END) == 1, tokens
        assert tokens[-2:] == [IM_END, tokenizer.convert_ids_to_tokens(tokenizer("\n")["input_ids"])[0]]


def test_reward_model_without_pad_scores_each_last_token(tmp_path):
    """A reward model whose checkpoint and tokenizer have no pad token (Llama's) is scored
    where HF scores one unpadded sequence: at its last token, the final EOS included."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raydaa.evaluate.rm_judge import RewardModelJudge

    path = save_reward_model(tmp_path / "rm")
    data = write_task_data(tmp_path / "data", n_sft=1, n_pref=1, n_val=4)
    rows = [json.loads(line) for line in data["validation"].read_text().splitlines()]
    prompts = [r["prompt"] for r in rows]
    answers = [r["chosen"][-1]["content"] for r in rows]
    judge = RewardModelJudge(str(path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert tokenizer.pad_token is None and model.config.pad_token_id is None
    expected = []
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = judge.token_ids(prompt, answer)
        assert ids[-1] == tokenizer.eos_token_id  # Zephyr's turn ends "</s>\n"; "\n" is dropped
        with torch.no_grad():
            expected.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    assert judge.scores(prompts, answers).tolist() == pytest.approx(expected, abs=1e-6)


def test_model_and_reward_model_from_an_object_store(assets, tmp_path, monkeypatch):
    """On a cluster the model and the reward model may sit under s3://: the tokenizer and
    the judge load this node's copy, as the training workers load the weights."""
    from s3_server import s3_server

    from raydaa.config.scenario import ModelConfig
    from raydaa.data.tokenize import load_tokenizer
    from raydaa.evaluate.rm_judge import RewardModelJudge
    from raydaa.io import storage

    monkeypatch.setenv("RAYDAA_CACHE", str(tmp_path / "cache"))
    with s3_server() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        model, judge = "s3://raydaa/models/my-qwen2", "s3://raydaa/models/my-rm"
        storage.upload_dir(assets["model"], model)
        storage.upload_dir(assets["reward_model"], judge)
        scenario = SimpleNamespace(model=ModelConfig(hf_id=model))  # what load_tokenizer reads
        assert load_tokenizer(scenario).chat_template.startswith("{% if messages[0]")
        scores = RewardModelJudge(judge).scores(["sort 3 1 2"], ["1 2 3"])
        assert scores.shape == (1,) and torch.isfinite(scores).all()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.deepspeed
def test_init_check_search_report(assets, tmp_path, ray_cluster, monkeypatch, capsys):
    """The user's flow with only a Qwen2 folder, one TRL-format JSONL file of pairs and a
    reward model, from a directory outside the repository (docs/own-model.md): init holds
    out the file's last 10% for validation and runs SFT on prompt + chosen; every trial
    finishes with quality in [0, 1] and a finite, non-negative KL; the report is written."""
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    sets = [f"--set={key}={json.dumps(value)}" for key, value in SHORT_RUN.items()]
    assert raydaa([
        "init", "--model", str(assets["model"]),
        "--preference-data", str(assets["preference"]),
        "--judge", f"reward_model:{assets['reward_model']}", "--gpus-per-node", "0",
        *sets, "--out", "my.yaml",
    ]) == 0
    scenario = tmp_path / "my.yaml"
    assert raydaa(["data", "check", "--scenario", str(scenario)]) == 0
    assert "=> ok" in capsys.readouterr().out

    assert raydaa([
        "search", "--scenario", str(scenario), "--results", str(results), "--method", "dpo",
        "--mode", "optuna", "--num-trials", "2",
    ]) == 0
    out = capsys.readouterr().out
    assert "best dpo configuration (2 finished trials)" in out, out[-3000:]

    from raydaa.io.results_store import read_store

    rows = read_store(results, "my", "dpo").to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "finished", row["error"]
        assert row["beta"] in BETAS and row["lr"] in LRS  # the scenario's own grid
        assert 0.0 <= row["quality_low"] <= row["quality"] <= row["quality_high"] <= 1.0, row
        assert math.isfinite(row["kl"]) and row["kl"] >= 0.0, row
        assert math.isfinite(row["kl_k3"]) and row["kl_k3"] >= 0.0
        assert Path(row["checkpoint_path"], "config.json").exists()
    reference = json.loads((results / "my" / "reference.json").read_text())
    config = json.loads(Path(reference["path"], "config.json").read_text())
    assert config["model_type"] == "qwen2"  # the user's architecture was trained

    assert raydaa(["report", "--scenario", str(scenario), "--results", str(results)]) == 0
    report = results / "my" / "report"
    for name in ("report.md", "summary.csv", "best_configs.csv", "pareto_methods.png"):
        assert (report / name).stat().st_size > 0, name
    assert "| dpo | pairwise |" in (report / "report.md").read_text()
