"""AlpacaEval / Arena-Hard exports: file formats, prompts files, the leaderboard reader,
and a tiny policy's evaluation when the alpaca_eval CLI is not installed."""

import json
import math

import pytest

from raydaa.config.evaluation import JudgeConfig
from raydaa.evaluate.benchmarks_export import (
    alpaca_eval_records,
    arena_hard_records,
    load_benchmark_prompts,
    markdown_counts,
    read_alpaca_eval_leaderboard,
    run_alpaca_eval,
    write_export,
)

ALPACA_ROWS = [
    {
        "instruction": "sort 3 1 2",
        "output": "1 2 3",
        "generator": "gpt4_turbo",
        "dataset": "helpful_base",
    },
    {
        "instruction": "reverse 1 2 3",
        "output": "3 2 1",
        "generator": "gpt4_turbo",
        "dataset": "oasst",
    },
]
ARENA_V01 = [
    {
        "question_id": "q1",
        "category": "arena-hard-v0.1",
        "cluster": "c",
        "turns": [{"content": "sort 2 1"}],
    }
]
ARENA_V2 = [{"uid": "u1", "category": "hard_prompt", "subcategory": "s", "prompt": "reverse 4 5"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_alpaca_eval_export_round_trips(tmp_path):
    (tmp_path / "alpaca_eval.json").write_text(json.dumps(ALPACA_ROWS))
    prompts = load_benchmark_prompts("alpaca_eval", tmp_path / "alpaca_eval.json")
    assert [p.text for p in prompts] == ["sort 3 1 2", "reverse 1 2 3"]
    records = alpaca_eval_records(prompts, ["1 2 3", "3 2 1 0"], "tiny-trial-1")
    path = write_export("alpaca_eval", records, tmp_path / "out", "tiny-trial-1")
    assert path == tmp_path / "out" / "alpaca_eval" / "model_outputs.json"
    back = json.loads(path.read_text())
    assert back == [
        {
            "instruction": "sort 3 1 2",
            "output": "1 2 3",
            "generator": "tiny-trial-1",
            "dataset": "helpful_base",
        },
        {
            "instruction": "reverse 1 2 3",
            "output": "3 2 1 0",
            "generator": "tiny-trial-1",
            "dataset": "oasst",
        },
    ]


def test_arena_hard_exports_follow_the_question_version(tmp_path):
    """v0.1 questions -> v0.1 answers (question_id, choices/turns); v2.0 -> v2.0 (uid,
    messages with {"answer"}, metadata); one JSON object per line."""
    v01 = load_benchmark_prompts("arena_hard", write_jsonl(tmp_path / "v01.jsonl", ARENA_V01))
    v2 = load_benchmark_prompts("arena_hard", write_jsonl(tmp_path / "v2.jsonl", ARENA_V2))
    records = arena_hard_records(v01 + v2, ["1 2", "# Title\n- 5\n- 4"], [3, 6], "tiny-policy")
    path = write_export("arena_hard", records, tmp_path / "out", "tiny-policy")
    assert path == tmp_path / "out" / "arena_hard" / "model_answer" / "tiny-policy.jsonl"
    old, new = (json.loads(line) for line in path.read_text().splitlines())
    assert set(old) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert (old["question_id"], old["model_id"]) == ("q1", "tiny-policy")
    assert old["choices"] == [{"index": 0, "turns": [{"content": "1 2", "token_len": 3}]}]
    assert set(new) == {"uid", "ans_id", "model", "messages", "tstamp", "metadata"}
    assert new["messages"] == [
        {"role": "user", "content": "reverse 4 5"},
        {"role": "assistant", "content": {"answer": "# Title\n- 5\n- 4"}},
    ]
    assert new["metadata"]["token_len"] == 6
    assert (
        new["metadata"]["header_count"]["h1"] == 1
        and new["metadata"]["list_count"]["unordered"] == 2
    )


def test_markdown_counts_skip_code_blocks():
    text = "## Plan\n1. one\n2. two\n* star\n**bold** and __under__\n```\n# not a header\n- no\n```"
    counts = markdown_counts(text)
    assert counts["header_count"] == {"h1": 0, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0}
    assert counts["list_count"] == {"ordered": 2, "unordered": 1}
    assert counts["bold_count"] == {"**": 1, "__": 1}


def test_bad_prompt_files_name_the_row_and_key(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "ok"}, {"prompt": "no"}]))
    with pytest.raises(ValueError, match="a.json: row 1: expected a string 'instruction'"):
        load_benchmark_prompts("alpaca_eval", tmp_path / "a.json")
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": "x"}])
    with pytest.raises(ValueError, match="q.jsonl: row 0: expected Arena-Hard questions"):
        load_benchmark_prompts("arena_hard", tmp_path / "q.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_benchmark_prompts("alpaca_eval", tmp_path / "missing.json")


def test_reads_the_lc_win_rate_from_alpaca_evals_leaderboard(tmp_path):
    """Header as alpaca_eval 0.6.6 writes leaderboard.csv (pandas to_csv, unnamed index =
    generator). Ours: LC 31.5 ± 1.96 x 1.2 percent -> 0.315, [0.29148, 0.33852]."""
    csv = (
        ",win_rate,standard_error,n_wins,n_wins_base,n_draws,n_total,discrete_win_rate,mode,"
        "avg_length,length_controlled_winrate,lc_standard_error\n"
        "gpt4_turbo,50.0,0.0,0,0,805,805,50.0,minimal,2049,50.0,0.0\n"
        "tiny-trial-1,28.2,1.5,220,585,0,805,27.3,community,1500,31.5,1.2\n"
    )
    (tmp_path / "leaderboard.csv").write_text(csv)
    est = read_alpaca_eval_leaderboard(tmp_path / "leaderboard.csv", "tiny-trial-1")
    assert est.mean == pytest.approx(0.315)
    assert (est.low, est.high) == (pytest.approx(0.29148), pytest.approx(0.33852))
    with pytest.raises(ValueError, match="no row for generator 'other'"):
        read_alpaca_eval_leaderboard(tmp_path / "leaderboard.csv", "other")


def test_without_the_alpaca_eval_cli_the_export_says_how_to_run_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no alpaca_eval executable here
    outputs = tmp_path / "alpaca_eval" / "model_outputs.json"
    judge = JudgeConfig(type="alpaca_eval", baseline="benchmark", api_key_env="OPENAI_API_KEY")
    outcome = run_alpaca_eval(outputs, "tiny-trial-1", judge)
    assert outcome.estimate is None and outcome.path == outputs
    assert "alpaca_eval is not installed" in outcome.note
    assert f"alpaca_eval evaluate --model_outputs {outputs}" in outcome.note
    assert "--annotators_config weighted_alpaca_eval_gpt4_turbo" in outcome.note


def test_evaluating_on_benchmarks_exports_both_and_decodes_arena_hard_greedily(
    tmp_path, monkeypatch
):
    """A tiny policy judged by alpaca_eval (+ arena_hard), no alpaca_eval CLI: quality is
    NaN, both exports are written, Arena-Hard answers are the policy's greedy answers
    (greedy_benchmarks), and KL is measured as usual (policy = reference -> 0)."""
    from raydaa.config.evaluation import SamplingConfig
    from raydaa.config.scenario import load_scenario
    from raydaa.evaluate.generation import render_prompts, sample
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    monkeypatch.setenv("PATH", str(tmp_path))
    policy = tmp_path / "run" / "checkpoint_000000" / "hf"
    build_tiny_model(0).save_pretrained(policy)
    build_tiny_tokenizer().save_pretrained(policy)
    (tmp_path / "alpaca_eval.json").write_text(json.dumps(ALPACA_ROWS))
    scenario = load_scenario("tiny")
    scenario.generation.num_prompts, scenario.generation.max_new_tokens = 4, 6
    scenario.generation.greedy_benchmarks = ["arena_hard"]
    scenario.judge = JudgeConfig(
        type="alpaca_eval", baseline="benchmark", api_key_env="OPENAI_API_KEY",
        extra_benchmarks=["arena_hard"],
        benchmark_prompts={
            "alpaca_eval": str(tmp_path / "alpaca_eval.json"),
            "arena_hard": str(write_jsonl(tmp_path / "question.jsonl", ARENA_V01 + ARENA_V01)),
        },
    )  # fmt: skip
    metrics = evaluate_policy(str(policy), str(policy), scenario)

    assert math.isnan(metrics["quality"]) and metrics["kl"] == 0.0
    outputs = json.loads(open(metrics["alpaca_eval_export"]).read())
    assert [r["generator"] for r in outputs] == ["tiny-run"] * 2
    answers = [json.loads(line) for line in open(metrics["arena_hard_export"])]
    tokenizer, model = build_tiny_tokenizer(), build_tiny_model(0).eval()
    ids = render_prompts(["sort 2 1"] * 2, tokenizer, conversational=True)
    greedy = sample(model, tokenizer, ids, SamplingConfig(temperature=0, max_new_tokens=6)).texts
    assert [a["choices"][0]["turns"][0]["content"] for a in answers] == greedy
    assert metrics["arena_hard_export"].startswith(str(policy.parent / "benchmarks"))


def test_a_missing_prompts_file_fails_before_sampling(tmp_path):
    from raydaa.config.scenario import load_scenario
    from raydaa.evaluate.policy import evaluate_policy

    scenario = load_scenario("tiny")
    scenario.judge = JudgeConfig(type="alpaca_eval", baseline="benchmark")
    with pytest.raises(ValueError, match="judge.benchmark_prompts.alpaca_eval is not set"):
        evaluate_policy(str(tmp_path / "no-model"), str(tmp_path / "no-model"), scenario)
