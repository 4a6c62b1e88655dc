"""The pairwise LLM judge against a real local HTTP server speaking /v1/chat/completions."""

import pytest
from judge_server import JudgeServer

from raydaa.config.evaluation import JudgeConfig
from raydaa.config.judge_prompts import TLDR_SIDE_BY_SIDE
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.evaluate.judges import build_judge
from raydaa.evaluate.llm_judge import (
    Endpoint,
    JudgeRequestError,
    JudgeSetupError,
    LLMJudge,
    combine_orders,
    parse_verdict,
)

POST = "SUBREDDIT: r/test\nPOST: my cat ate my homework again\nTL;DR:"


def make_judge(server, tmp_path, model="judge-model", **kwargs) -> LLMJudge:
    endpoint = Endpoint(base_url=server.url, api_key="sk-test", model=model)
    kwargs = {"retry_base_s": 0.01, "cache_path": tmp_path / "judge.sqlite"} | kwargs
    return LLMJudge(endpoint, "tldr_side_by_side", **kwargs)


def test_parse_verdict():
    assert parse_verdict("blah\n\nComparison: x\n\nWinner: A") == "A"
    assert parse_verdict("**Winner:** B") == "B"
    assert parse_verdict('"""\nComparison: same\n\nWinner: C\n"""') == "C"
    assert parse_verdict("winner: assistant a") == "A"
    assert parse_verdict("Winner: A ... on reflection, Winner: B") == "B"  # the last one counts
    assert parse_verdict("Winner: <A if assistant A is better, B if ...>") is None  # format echo
    assert parse_verdict("I cannot decide.") is None
    assert parse_verdict("") is None


def test_combine_orders_rule():
    """Mean of the parseable verdicts: win+win 1, win+loss 0.5, win+tie 0.75, none 0.5."""
    assert combine_orders(1.0, 1.0) == 1.0
    assert combine_orders(1.0, 0.0) == 0.5
    assert combine_orders(1.0, 0.5) == 0.75
    assert combine_orders(None, 0.0) == 0.0
    assert combine_orders(None, None) == 0.5


def test_both_orders_are_asked_and_the_longer_summary_wins(tmp_path):
    """Server prefers the longer summary. Pairs: candidate longer -> wins as A and as B
    (1.0); shorter -> loses both (0.0); same length -> C twice (0.5)."""
    with JudgeServer() as server:
        judge = make_judge(server, tmp_path, concurrency=3)
        out = judge.compare(
            [POST] * 3, ["a long summary", "short", "same"], ["short", "a long one", "SAME"]
        )
    assert out == [1.0, 0.0, 0.5]
    assert judge.stats == {
        "judge_verdicts": 6,
        "judge_unparseable": 0,
        "judge_requests": 6,
        "judge_cache_hits": 0,
    }
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 6 and all(r["path"] == "/v1/chat/completions" for r in server.requests)
    assert all(r["auth"] == "Bearer sk-test" for r in server.requests)
    assert {b["model"] for b in bodies} == {"judge-model"} and {
        b["temperature"] for b in bodies
    } == {0}
    assert all(
        b["messages"][0] == {"role": "system", "content": TLDR_SIDE_BY_SIDE.system} for b in bodies
    )
    users = [b["messages"][1]["content"] for b in bodies]
    assert all(POST in u for u in users)
    # the first pair was asked in both orders
    as_a = "[The Start of Assistant A's Summary]\na long summary\n"
    as_b = "[The Start of Assistant B's Summary]\na long summary\n"
    assert sum(as_a in u for u in users) == 1 and sum(as_b in u for u in users) == 1


def test_position_bias_cancels(tmp_path):
    """A judge that always answers A (or always B) prefers a position, not an answer: the
    candidate wins as A and loses as B, so every pair is 0.5 whatever the texts."""
    for letter in "AB":
        with JudgeServer(decide=lambda messages, x=letter: f"Winner: {x}") as server:
            judge = make_judge(server, tmp_path, cache_path=tmp_path / f"{letter}.sqlite")
            assert judge.compare([POST] * 2, ["x", "much longer"], ["y y y", "z"]) == [0.5, 0.5]


def test_unparseable_verdicts_are_counted_and_left_out(tmp_path):
    """GARBAGE in position A draws an answer with no verdict. Pair 1: candidate
    'GARBAGE long' (12 chars) vs 'short': as A unparseable, as B it wins -> 1.0 (the
    unparseable one is left out). Pair 2: both contain GARBAGE -> no verdict either way -> 0.5."""
    with JudgeServer() as server:
        judge = make_judge(server, tmp_path)
        out = judge.compare([POST] * 2, ["GARBAGE long", "GARBAGE a"], ["short", "GARBAGE b"])
    assert out == [1.0, 0.5]
    assert judge.stats["judge_unparseable"] == 3 and judge.stats["judge_verdicts"] == 4


def test_retries_after_429_and_500(tmp_path):
    """First two requests fail (429 then 500), then the server answers: one pair needs two
    verdicts, so the server sees 2 failures + 2 answers = 4 requests."""
    with JudgeServer(fail_first=(429, 500)) as server:
        judge = make_judge(server, tmp_path, concurrency=1)
        assert judge.compare([POST], ["longer one"], ["short"]) == [1.0]
    assert len(server.requests) == 4


def test_gives_up_on_client_errors_and_after_the_last_retry(tmp_path):
    """Candidate == baseline: both orders are the same question, so one request each try.
    A 400 is not retried (a retry would have succeeded); a 503 is, max_retries times."""
    with JudgeServer(fail_first=(400,)) as server:
        with pytest.raises(JudgeRequestError, match="HTTP 400"):
            make_judge(server, tmp_path, concurrency=1).compare([POST], ["a"], ["a"])
    assert len(server.requests) == 1
    with JudgeServer(fail_first=(503,) * 10) as server:
        judge = make_judge(server, tmp_path, concurrency=1, max_retries=2)
        with pytest.raises(JudgeRequestError, match="after 3 attempts"):
            judge.compare([POST], ["a"], ["a"])
    assert len(server.requests) == 3


def test_second_run_is_served_from_the_cache(tmp_path):
    """A new judge on the same cache file sends no request for pairs already judged; a
    different judge model is a different key."""
    prompts, candidates, baselines = [POST] * 3, ["aa", "b", "GARBAGE c"], ["a", "bb", "c"]
    with JudgeServer() as server:
        first = make_judge(server, tmp_path).compare(prompts, candidates, baselines)
        assert len(server.requests) == 6
        again = make_judge(server, tmp_path)
        assert again.compare(prompts, candidates, baselines) == first
        assert len(server.requests) == 6
        assert again.stats["judge_requests"] == 0 and again.stats["judge_cache_hits"] == 6
        assert again.stats["judge_unparseable"] == 1  # parsed again from the cached answer
        make_judge(server, tmp_path, model="other-judge").compare(prompts, candidates, baselines)
        assert len(server.requests) == 12


def judge_config(**kw) -> JudgeConfig:
    base = {
        "type": "gpt_side_by_side",
        "model": "judge-model",
        "prompt_template": "tldr_side_by_side",
        "baseline": "chosen",
    }
    return JudgeConfig(**(base | kw))


def test_missing_endpoint_or_key_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYDAA_TEST_JUDGE_URL", raising=False)
    monkeypatch.delenv("RAYDAA_TEST_JUDGE_KEY", raising=False)
    config = judge_config(
        endpoint_env="RAYDAA_TEST_JUDGE_URL",
        api_key_env="RAYDAA_TEST_JUDGE_KEY",
        cache=str(tmp_path / "c.sqlite"),
    )
    with pytest.raises(JudgeSetupError, match="RAYDAA_TEST_JUDGE_URL is not set"):
        build_judge(config)
    monkeypatch.setenv("RAYDAA_TEST_JUDGE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(JudgeSetupError, match="RAYDAA_TEST_JUDGE_KEY is not set"):
        build_judge(config)
    monkeypatch.setenv("RAYDAA_TEST_JUDGE_KEY", "sk-x")
    judge = build_judge(config)
    assert isinstance(judge, LLMJudge) and judge.endpoint == Endpoint(
        "http://127.0.0.1:9/v1", "sk-x", "judge-model"
    )


def test_judge_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="exactly one of endpoint"):
        judge_config()
    with pytest.raises(ValueError, match="needs \\['model'\\]"):
        judge_config(model=None, endpoint="http://x/v1")
    with pytest.raises(ValueError, match="prompt_template: unknown 'nope'"):
        judge_config(endpoint="http://x/v1", prompt_template="nope")
    with pytest.raises(ValueError, match="reward_model needs model"):
        JudgeConfig(type="reward_model", baseline="chosen")
    with pytest.raises(ValueError, match="benchmark_prompts: \\['arena_hard'\\] not judged here"):
        JudgeConfig(
            type="alpaca_eval", baseline="benchmark", benchmark_prompts={"arena_hard": "q.jsonl"}
        )
    yaml_path = tmp_path / "bad.yaml"
    text = (search_spaces_dir() / "scenarios" / "tiny.yaml").read_text()
    yaml_path.write_text(text.replace("judge:", "judge:\n  concurrency: 0", 1))
    with pytest.raises(ConfigError, match=f"{yaml_path}.judge: concurrency must be >= 1"):
        load_scenario(str(yaml_path))


def test_evaluation_with_the_llm_judge_pays_once(tmp_path):
    """evaluate_policy with gpt_side_by_side on tiny models (policy seed 1 vs the
    reference's samples, 4 judged prompts, both orders = 8 verdicts): the server sees each
    distinct question once, and nothing the second time."""
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    for seed, name in ((0, "reference"), (1, "policy")):
        build_tiny_model(seed).save_pretrained(tmp_path / name)
        build_tiny_tokenizer().save_pretrained(tmp_path / name)
    policy, reference = str(tmp_path / "policy"), str(tmp_path / "reference")
    with JudgeServer() as server:
        scenario = load_scenario("tiny")
        scenario.generation.num_prompts, scenario.generation.max_new_tokens = 4, 6
        scenario.judge = judge_config(
            endpoint=server.url,
            num_prompts=4,
            baseline="sft_policy",
            cache=str(tmp_path / "judge.sqlite"),
        )
        first = evaluate_policy(policy, reference, scenario)
        asked = len(server.requests)
        second = evaluate_policy(policy, reference, scenario)
        assert len(server.requests) == asked
    assert first["judge_verdicts"] == 8 and 4 <= first["judge_requests"] == asked <= 8
    assert all(r["auth"] == "Bearer EMPTY" for r in server.requests)  # no api_key_env: keyless
    assert second["judge_requests"] == 0 and second["judge_cache_hits"] == 8
    assert first["quality"] == second["quality"] and first["judge_unparseable"] == 0
    for key in ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3"):
        assert key in first
