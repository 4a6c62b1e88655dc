"""The pairwise LLM judge against a real local HTTP server speaking /v1/chat/completions."""

import logging
import pickle
import secrets
import traceback

import pytest
import yaml
from judge_server import JudgeServer

from raydaa.config.evaluation import JudgeConfig
from raydaa.config.judge_prompts import (
    CHAT_SIDE_BY_SIDE,
    TLDR_SIDE_BY_SIDE,
    VERDICT_FORMAT,
    load_template_file,
)
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.evaluate.judges import build_judge
from raydaa.evaluate.llm_judge import (
    REDACTED,
    Endpoint,
    JudgeRequestError,
    JudgeSetupError,
    LLMJudge,
    combine_orders,
    parse_verdict,
)

POST = "SUBREDDIT: r/test\nPOST: my cat ate my homework again\nTL;DR:"
KEY_ENV = "RAYDAA_TEST_JUDGE_KEY"


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    """The key the judges of this module send, from the variable their Endpoint names."""
    monkeypatch.setenv(KEY_ENV, "sk-test")


def make_judge(server, tmp_path, model="judge-model", template="tldr_side_by_side", **kwargs):
    endpoint = Endpoint(base_url=server.url, model=model, api_key_env=KEY_ENV)
    kwargs = {"retry_base_s": 0.01, "cache_path": tmp_path / "judge.sqlite"} | kwargs
    return LLMJudge(endpoint, template, **kwargs)


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
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = judge_config(
        endpoint_env="RAYDAA_TEST_JUDGE_URL",
        api_key_env=KEY_ENV,
        cache=str(tmp_path / "c.sqlite"),
    )
    with pytest.raises(JudgeSetupError, match="RAYDAA_TEST_JUDGE_URL is not set"):
        build_judge(config)
    monkeypatch.setenv("RAYDAA_TEST_JUDGE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(JudgeSetupError, match="RAYDAA_TEST_JUDGE_KEY is not set"):
        build_judge(config)
    monkeypatch.setenv(KEY_ENV, "sk-x")
    judge = build_judge(config)
    # the endpoint names the variable; the key itself is read when a request is sent
    assert isinstance(judge, LLMJudge) and judge.endpoint == Endpoint(
        "http://127.0.0.1:9/v1", "judge-model", KEY_ENV
    )
    assert judge.endpoint.api_key() == "sk-x" and "sk-x" not in repr(judge.endpoint)


def test_judge_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="exactly one of endpoint"):
        judge_config()
    with pytest.raises(ValueError, match="needs \\['model'\\]"):
        judge_config(model=None, endpoint="http://x/v1")
    with pytest.raises(ValueError, match="prompt_template: unknown 'nope'.*or a path to a YAML"):
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


CHAT = [
    {"role": "user", "content": "name a prime"},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "and an even one?"},
]


def test_chat_side_by_side_asks_both_orders_with_role_tagged_turns(tmp_path):
    """The chat prompt through a real server: the same 'longer wins' rule as above, so
    pairs (longer, shorter, equal) give 1.0, 0.0, 0.5; the conversation appears as
    role-tagged turns, and each pair is asked with the candidate as A and as B."""
    assert VERDICT_FORMAT in CHAT_SIDE_BY_SIDE.system  # the TL;DR verdict block, one parser
    assert VERDICT_FORMAT in TLDR_SIDE_BY_SIDE.system
    assert parse_verdict(CHAT_SIDE_BY_SIDE.system) is None  # the format's own text is no verdict
    with JudgeServer() as server:
        judge = build_judge(
            judge_config(
                prompt_template="chat_side_by_side",
                endpoint=server.url,
                api_key_env=KEY_ENV,
                cache=str(tmp_path / "judge.sqlite"),
            )
        )
        out = judge.compare([CHAT] * 3, ["two is even", "2", "4"], ["2", "four is", "6"])
    assert out == [1.0, 0.0, 0.5]
    assert judge.template_name == "chat_side_by_side" and judge.stats["judge_unparseable"] == 0
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 6
    assert all(b["messages"][0]["content"] == CHAT_SIDE_BY_SIDE.system for b in bodies)
    users = [b["messages"][1]["content"] for b in bodies]
    turns = "user: name a prime\n\nassistant: 7\n\nuser: and an even one?"
    assert all(u.startswith(f"[Conversation]\n{turns}\n\n") for u in users)
    as_a = "[The Start of Assistant A's Answer]\ntwo is even\n[The End of Assistant A's Answer]"
    as_b = "[The Start of Assistant B's Answer]\ntwo is even\n[The End of Assistant B's Answer]"
    assert sum(as_a in u for u in users) == 1 and sum(as_b in u for u in users) == 1


MY_TEMPLATE = {
    "system": "Judge two replies; end with\n\nWinner: A, B or C",
    "user": (
        "Q: {text}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of it]\n\n"
        "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of it]\n{{literal braces}}"
    ),
}


def write_scenario(folder, template: str):
    """A minimal tiny scenario YAML in `folder` whose LLM judge uses `template`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "judged",
        "model": {"builder": "tiny"},
        "data": {"sft": "tiny:sft_train", "preference": "tiny:pref_train",
                 "validation": "tiny:pref_val"},
        "max_length": 64,
        "judge": {"type": "gpt_side_by_side", "model": "judge-model", "baseline": "chosen",
                  "endpoint": "http://127.0.0.1:9/v1", "prompt_template": template},
    }  # fmt: skip
    path = folder / "judged.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_template_file_of_ones_own_is_read_from_the_scenarios_folder(tmp_path, monkeypatch):
    """A relative prompt_template is taken from the scenario YAML's folder (not the cwd),
    read at load, and its messages are what the server receives."""
    scenario_path = write_scenario(tmp_path / "scen", "prompts/mine.yaml")
    (tmp_path / "scen" / "prompts").mkdir()
    (tmp_path / "scen" / "prompts" / "mine.yaml").write_text(yaml.safe_dump(MY_TEMPLATE))
    monkeypatch.chdir(tmp_path)  # elsewhere: ./prompts/mine.yaml does not exist here
    judge = load_scenario(str(scenario_path)).judge
    assert judge.prompt_template == str(tmp_path / "scen" / "prompts" / "mine.yaml")
    assert judge.template == load_template_file(judge.prompt_template)
    assert judge.template.system == MY_TEMPLATE["system"]
    with JudgeServer() as server:
        judge.endpoint, judge.cache = server.url, str(tmp_path / "judge.sqlite")
        llm = build_judge(judge)
        assert llm.compare([CHAT], ["longer one"], ["short"]) == [1.0]
    messages = [r["body"]["messages"] for r in server.requests]
    assert len(messages) == 2 and all(m[0]["content"] == MY_TEMPLATE["system"] for m in messages)
    assert messages[0][1]["content"].startswith("Q: user: name a prime\n\n")
    assert all(m[1]["content"].endswith("\n{literal braces}") for m in messages)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ({"system": "s"}, "missing key\\(s\\) \\['user'\\]"),
        ({"user": "{text} {answer_a} {answer_b}"}, "missing key\\(s\\) \\['system'\\]"),
        ({"system": "s", "user": "{text} {answer_a} {answer_b}", "extra": 1},
         "unknown key\\(s\\) \\['extra'\\]"),
        ({"system": "s", "user": "{text} {answer_a}"},
         "key 'user': placeholder\\(s\\) \\['\\{answer_b\\}'\\] missing"),
        ({"system": "s", "user": "{question} {text} {answer_a} {answer_b}"},
         "key 'user': unknown placeholder\\(s\\) \\['\\{question\\}'\\]"),
        ({"system": "s", "user": "{text} {answer_a} {answer_b} {"},
         "key 'user': not a valid format string"),
        ({"system": "see {text}", "user": "{text} {answer_a} {answer_b}"},
         "key 'system' has \\['\\{text\\}'\\]"),
        ({"system": "s", "user": 3}, "key 'user' must be non-empty text"),
        ("just text", "expected a mapping"),
    ],
)  # fmt: skip
def test_template_file_errors_name_the_scenario_the_file_and_the_key(tmp_path, content, message):
    """Raised when the scenario loads (a ConfigError naming the scenario file's judge
    section), before anything runs; the message names the template file and its key."""
    scenario_path = write_scenario(tmp_path, "mine.yaml")
    if content is not None:
        (tmp_path / "mine.yaml").write_text(yaml.safe_dump(content))
    expected = f"{scenario_path}.judge: judge.prompt_template {tmp_path / 'mine.yaml'}: {message}"
    with pytest.raises(ConfigError, match=expected.replace(".yaml", "\\.yaml")):
        load_scenario(str(scenario_path))


def planted() -> str:
    return f"sk-planted-{secrets.token_hex(16)}"


def test_the_key_is_read_at_request_time_and_never_kept(tmp_path, monkeypatch):
    """The endpoint and the config carry the variable's name: no repr or pickle of them
    holds the key, and a key changed between two calls is the one the next request sends."""
    first, second = planted(), planted()
    monkeypatch.setenv(KEY_ENV, first)
    with JudgeServer() as server:
        config = judge_config(
            endpoint=server.url, api_key_env=KEY_ENV, cache=str(tmp_path / "c.sqlite")
        )
        judge = build_judge(config)
        judge.compare([POST], ["longer one"], ["short"])
        monkeypatch.setenv(KEY_ENV, second)
        judge.compare([POST], ["another longer one"], ["short"])
    assert [r["auth"] for r in server.requests] == [f"Bearer {first}"] * 2 + [f"Bearer {second}"] * 2
    for obj in (judge.endpoint, config):
        assert first not in repr(obj) and second not in repr(obj)
        assert first.encode() not in pickle.dumps(obj) and second.encode() not in pickle.dumps(obj)


def test_a_key_the_server_echoes_is_scrubbed_from_errors_and_logs(tmp_path, monkeypatch, caplog):
    """The server's error messages repeat the bearer token (as OpenAI's 401 does). The
    raised error, its whole traceback and the retry log lines show a redaction instead,
    and chain no openai error whose text would still hold the key."""
    key = planted()
    monkeypatch.setenv(KEY_ENV, key)
    with JudgeServer(fail_first=(401,)) as server:
        with pytest.raises(JudgeRequestError, match="HTTP 401") as refused:
            make_judge(server, tmp_path, concurrency=1).compare([POST], ["a"], ["a"])
    assert server.requests[0]["auth"] == f"Bearer {key}"
    with caplog.at_level(logging.WARNING, logger="raydaa.evaluate.llm_judge"):
        with JudgeServer(fail_first=(503,) * 10) as server:
            judge = make_judge(server, tmp_path, concurrency=1, max_retries=2)
            with pytest.raises(JudgeRequestError, match="after 3 attempts") as exhausted:
                judge.compare([POST], ["a"], ["a"])
    assert caplog.text.count("retrying in") == 2 and REDACTED in caplog.text
    assert key not in caplog.text
    for err in (refused.value, exhausted.value):
        assert f"Incorrect API key provided: {REDACTED}" in str(err)
        assert err.__cause__ is None and err.__context__ is None
        assert key not in "".join(traceback.format_exception(err))


def test_api_key_env_must_be_a_name_and_a_key_put_there_is_not_echoed():
    key = planted()
    with pytest.raises(ValueError, match="api_key_env must be the NAME") as err:
        judge_config(endpoint="http://x/v1", api_key_env=key)
    assert key not in str(err.value)
