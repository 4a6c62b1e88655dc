"""The built-in `rehearsal` scenario: llama31-8b-uf's shape at tiny widths (docs/rehearsal.md).

Fast checks of its assets (Llama 3's vocabulary, special ids and template; multi-turn
UltraFeedback rows that raydaa's reader splits into a multi-turn prompt; the over-length
drop and the left truncation at 4096; determinism; the reward model behind the judge), and
one end-to-end run of the CLI: `raydaa search --scenario rehearsal --method dpo --mode
optuna --num-trials 1`, in a fresh process from a temporary directory (one trial: a
second adds ~2 minutes and no code path).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from raydaa.config.scenario import ModelConfig, load_scenario
from raydaa.data.tokenize import IGNORE_INDEX, load_tokenizer, prepare_preferences, prepare_sft
from raydaa.data.validation import normalize
from raydaa.scenarios import build_rehearsal_model, build_rehearsal_tokenizer, rehearsal_datasets
from raydaa.scenarios.rehearsal import REHEARSAL_MAX_LENGTH, VOCAB_SIZE
from raydaa.scenarios.rehearsal_data import prompt_tokens

LLAMA3_SPECIALS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001,
                   "<|reserved_special_token_0|>": 128002, "<|start_header_id|>": 128006,
                   "<|end_header_id|>": 128007, "<|reserved_special_token_4|>": 128008,
                   "<|eot_id|>": 128009, "<|reserved_special_token_250|>": 128255}


@pytest.fixture(scope="module")
def tokenizer():
    """The tokenizer as every stage gets it (raydaa.data.tokenize.load_tokenizer)."""
    return load_tokenizer(SimpleNamespace(model=ModelConfig(builder="rehearsal")))


@pytest.fixture(scope="module")
def data():
    return rehearsal_datasets(0)


def test_vocabulary_is_llama3s(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == 128_256
    assert len(set(tokenizer.get_vocab().values())) == VOCAB_SIZE  # no id used twice
    for token, id_ in LLAMA3_SPECIALS.items():
        assert tokenizer.convert_tokens_to_ids(token) == id_, token
    assert tokenizer.bos_token_id == 128000 and tokenizer.eos_token_id == 128009
    assert len(tokenizer.all_special_ids) == 256  # every id from 128000 up is special
    # no pad token of its own (Llama 3); raydaa pads with EOS, as for a hub Llama 3
    assert build_rehearsal_tokenizer().pad_token is None
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer("ba be")["input_ids"] == [128000, 3, 4]  # plain text gets BOS


def test_chat_template_renders_like_llama3(tokenizer):
    messages = [{"role": "user", "content": "ba be"}, {"role": "assistant", "content": "bi"},
                {"role": "user", "content": "bo"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nba be<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nbi<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nbo<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    assert ids[:4] == [128000, 128006, tokenizer.convert_tokens_to_ids("user"), 128007]
    assert ids[-3:] == [128006, tokenizer.convert_tokens_to_ids("assistant"), 128007]
    assert len(ids) == prompt_tokens(messages)  # what the data generator sizes rows with


def test_multi_turn_prompt_survives_the_ultrafeedback_reader(data):
    """chosen / rejected share every turn but the last: raydaa's reader (TRL's
    extract_prompt) makes those shared turns the prompt, not only UF's `prompt` string."""
    from raydaa.data.formats import detect_format

    rows = data["pref_train"].to_list()
    fmt, _ = detect_format(rows, "preference", "rehearsal:pref_train")
    assert "prompt" in fmt.fields and fmt.conversational  # UltraFeedback's explicit format
    for row in rows[:10]:
        reason, (prompt, (chosen, rejected)) = normalize(row, fmt)
        assert reason is None
        assert len(prompt) >= 3 and len(prompt) % 2 == 1  # user, assistant, ..., user
        assert [m["role"] for m in prompt] == ["user", "assistant"] * (len(prompt) // 2) + ["user"]
        assert prompt[0]["content"] == row["prompt"] and prompt == row["chosen"][:-1]
        assert chosen == row["chosen"][-1:] and rejected == row["rejected"][-1:]
        assert chosen[0]["role"] == "assistant" and chosen != rejected
    sft_row = data["sft_train"][0]
    assert len(sft_row["messages"]) >= 4 and sft_row["messages"][-1]["role"] == "assistant"


def test_evaluation_samples_on_the_whole_conversation():
    """The evaluation prompts are the turns the model trains on, not UF's `prompt` string
    (the first user turn alone); tiny's single-turn rows keep their string prompt, which
    its gold judge reads."""
    from raydaa.data.preflight import validation_set

    rows = validation_set(load_scenario("rehearsal")).rows
    assert rows and all(isinstance(r["prompt"], list) and len(r["prompt"]) >= 3 for r in rows)
    assert all(r["prompt"][-1]["role"] == "user" for r in rows)
    assert all(isinstance(r["prompt"], str) for r in validation_set(load_scenario("tiny")).rows)


def test_long_rows_are_truncated_and_over_length_prompts_dropped(data, tokenizer):
    """At max_length 4096: exactly 1 of 100 rows per training set is dropped as
    prompt_over_length (raydaa's 1% limit), some rows are cut from the left, most are a
    few hundred to 2,000 tokens, and completions keep tens of tokens, ending with EOS."""
    prefs = prepare_preferences(data["pref_train"], tokenizer, max_length=REHEARSAL_MAX_LENGTH)
    sft = prepare_sft(data["sft_train"], tokenizer, max_length=REHEARSAL_MAX_LENGTH)
    for prepared in (prefs, sft):
        report = prepared.report
        assert (report.total, report.n_bad, report.counts["prompt_over_length"]) == (100, 1, 1)
        assert report.fraction_bad <= 0.01
    rows = prefs.dataset.to_list()
    lengths = [len(r["chosen_input_ids"]) for r in rows]
    assert max(lengths) == REHEARSAL_MAX_LENGTH
    truncated = [r for r in rows if r["chosen_input_ids"][0] != tokenizer.bos_token_id]
    assert len(truncated) >= 1  # the prompt lost its start, BOS included
    assert all(len(r["chosen_input_ids"]) == REHEARSAL_MAX_LENGTH for r in truncated)
    assert sum(200 <= n <= 2100 for n in lengths) >= 0.9 * len(lengths)
    for r in rows:
        for side in ("chosen", "rejected"):
            completion = [t for t in r[f"{side}_labels"] if t != IGNORE_INDEX]
            assert 11 <= len(completion) <= 25 and completion[-1] == tokenizer.eos_token_id
    validation = prepare_preferences(data["pref_val"], tokenizer, max_length=REHEARSAL_MAX_LENGTH)
    assert validation.report.n_bad == 0  # evaluation samples on these prompts as they are


def test_deterministic_in_the_seed():
    a, b, c = rehearsal_datasets(3), rehearsal_datasets(3, n_val=21), rehearsal_datasets(4)
    for split in ("sft_train", "pref_train"):
        assert a[split].to_dict() == b[split].to_dict()
        assert a[split].to_dict() != c[split].to_dict()
    assert a["pref_val"].to_dict() != c["pref_val"].to_dict()
    one, two, other = build_rehearsal_model(1), build_rehearsal_model(1), build_rehearsal_model(2)
    assert torch.equal(one.lm_head.weight, two.lm_head.weight)
    assert not torch.equal(one.lm_head.weight, other.lm_head.weight)


def test_model_is_llama31_8b_in_shape():
    model = build_rehearsal_model(0)
    c = model.config
    assert (c.vocab_size, c.tie_word_embeddings) == (VOCAB_SIZE, False)
    assert c.num_key_value_heads < c.num_attention_heads  # grouped-query attention
    assert c.rope_parameters["rope_theta"] == 500_000 and c.rope_parameters["rope_type"] == "llama3"
    assert c.max_position_embeddings >= REHEARSAL_MAX_LENGTH + load_scenario(
        "rehearsal").generation.max_new_tokens
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[128000, 5, 6, 128009]])
    assert model(input_ids=ids).logits.shape == (1, 4, VOCAB_SIZE)


def test_the_judge_loads_the_builtin_reward_model_by_name(tmp_path, monkeypatch, data):
    """`judge.model: rehearsal:reward_model` needs no path: the judge builds and saves it
    once under $RAYDAA_CACHE, then loads that copy (the end-to-end test loads it in Ray
    tasks of a fresh process)."""
    from raydaa.evaluate.judges import build_judge
    from raydaa.scenarios.assets import builtin_judge_model

    monkeypatch.setenv("RAYDAA_CACHE", str(tmp_path))
    judge_config = load_scenario("rehearsal").judge
    assert judge_config.type == "reward_model" and judge_config.model == "rehearsal:reward_model"
    judge = build_judge(judge_config)
    saved = Path(builtin_judge_model("rehearsal:reward_model"))
    assert saved.parent == tmp_path / "builtin" and (saved / "config.json").exists()
    assert len(judge.tokenizer) == VOCAB_SIZE and judge.model.config.num_labels == 1
    rows = data["pref_val"].to_list()[:2]
    prompts, answers = [r["prompt"] for r in rows], [r["chosen"][-1]["content"] for r in rows]
    scores = judge.scores(prompts, answers)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert judge.compare(prompts, answers, answers) == [0.5, 0.5]
    from raydaa.scenarios import rehearsal

    def rebuilt(seed=0):
        raise AssertionError("the saved reward model was built again")

    monkeypatch.setattr(rehearsal, "build_rehearsal_reward_model", rebuilt)
    assert builtin_judge_model("rehearsal:reward_model") == str(saved)  # found, not rebuilt
    assert builtin_judge_model("/models/my-rm") is None
    with pytest.raises(ValueError, match="rehearsal:reward_model"):
        builtin_judge_model("rehearsal:policy")


# ---------------------------------------------------------------------------------------
# End to end, as a user runs it
# ---------------------------------------------------------------------------------------

TRIALS = 1
SEARCH_TIMEOUT_S = 1800  # ~8 min on 2 idle cores; a shared machine takes longer


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.deepspeed
def test_search_end_to_end(tmp_path):
    """`raydaa search --scenario rehearsal --method dpo --mode optuna --num-trials 1` from a
    temporary directory, in a fresh process (its own local Ray, its own copy of the
    reward model): SFT drops and counts the over-length row, the trial finishes with a
    win rate in [0, 1] and a finite KL >= 0, and every stage prints its peak memory."""
    results, log = tmp_path / "results", tmp_path / "search.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAYDAA_CACHE": str(tmp_path / "cache"), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}
    command = [str(Path(sys.executable).with_name("raydaa")), "search", "--scenario", "rehearsal",
               "--method", "dpo", "--mode", "optuna", "--num-trials", str(TRIALS), "--results", str(results)]
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=SEARCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # the CLI stops its trials and local Ray
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = None
    seconds = time.perf_counter() - start
    text = log.read_text()
    print(f"rehearsal search: {seconds:.0f} s, exit {code}\n" + "\n".join(
        line for line in text.splitlines()
        if re.search(r"stage 1.*after|peak|reference cache: 99|best dpo", line)
    ))
    assert code == 0, text[-5000:]
    check_search_output(text, results, TRIALS)


def check_search_output(text: str, results: Path, trials: int) -> None:
    """What the end-to-end run of `trials` trials must show: its CLI output `text` and its
    results folder."""
    plural = "trial" if trials == 1 else "trials"
    assert f"best dpo configuration ({trials} finished {plural})" in text, text[-3000:]

    from raydaa.io.results_store import read_store

    rows = read_store(results, "rehearsal", "dpo").to_pylist()
    assert len(rows) == trials
    for row in rows:
        assert row["status"] == "finished", row["error"]
        assert 0.0 <= row["quality_low"] <= row["quality"] <= row["quality_high"] <= 1.0, row
        assert math.isfinite(row["kl"]) and row["kl"] >= 0.0, row
        assert math.isfinite(row["kl_k3"]) and row["kl_k3"] >= 0.0, row
    # stage 1 read 100 rows, dropped the over-length one and counted it
    reference = json.loads((results / "rehearsal" / "reference.json").read_text())
    assert (reference["rows"], reference["dropped"]) == (99, 1), reference
    # every stage names its peak memory: SFT, the reference cache, and each trial's
    # training (max over its workers) and evaluation, on the console and in its row
    assert re.search(r"stage 1 \(SFT rehearsal\): finished after \d+ s, peak memory per worker: "
                     r"[\d.]+ GiB resident", text), text[-3000:]
    assert re.search(r"reference cache: 99/99 pairs scored .*peak RSS of a scoring task [\d.,]+ MiB",
                     text), text[-3000:]
    lines = re.findall(r": finished, quality [\d.]+, KL [\d.e+-]+, peak memory: training [\d.]+ GiB "
                       r"resident per worker, evaluation [\d.]+ GiB resident$", text, re.MULTILINE)
    assert len(lines) == trials, f"one line per trial expected, found {lines}"
    for row in rows:
        assert 100 < row["peak_rss_mib"] < 24 * 1024 and 100 < row["eval_peak_rss_mib"] < 24 * 1024, row
        assert row["sampling_tokens_per_s"] > 0, row
