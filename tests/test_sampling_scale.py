"""Evaluation and the reference cache at scale: token-budget batches, the KV cache, the
scenario's dtype, and the measurements evaluation reports. Tiny random models, no Ray
except the one test marked so."""

import json
import math
import random

import pytest
import torch

from raydaa.config.evaluation import SamplingConfig
from raydaa.core.logprobs import IGNORE_INDEX, sequence_logps
from raydaa.evaluate.generation import render_prompts, sample
from raydaa.evaluate.kl import completion_logps
from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer
from raydaa.study.theory import build_tiny_llama

WORDS = "sort reverse increment 3 1 2 4 0 7 9 5".split()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def prompts(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    """`n` chat-rendered prompts of 6 to 15 tokens."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]
    return render_prompts(texts, tokenizer, conversational=True)


def record_forwards(model) -> list[tuple[int, ...]]:
    """The shape of every input_ids the model's forward receives, appended as it runs."""
    shapes = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    return shapes


def assert_within(budget: int, shapes) -> None:
    """Every batch of more than one row holds rows x width <= budget; some held several."""
    assert len(shapes) > 1
    assert any(rows > 1 for rows, _ in shapes)
    for rows, width in shapes:
        assert rows == 1 or rows * width <= budget, (rows, width, budget)


# -- KL scoring ---------------------------------------------------------------------------


def test_kl_scoring_under_a_small_budget_equals_one_row_at_a_time(tokenizer):
    model = build_tiny_model(seed=0).eval()
    ids = prompts(tokenizer, 10)
    rng = random.Random(1)
    completions = [[rng.randrange(3, len(tokenizer)) for _ in range(rng.randint(1, 14))]
                   for _ in ids]
    shapes = record_forwards(model)
    budget = 64
    batched = completion_logps(model, ids, completions, tokenizer.pad_token_id, batch_tokens=budget)
    assert_within(budget, shapes)
    assert batched.dtype == torch.float64 and batched.shape == (len(ids),)
    for i, (p, c) in enumerate(zip(ids, completions, strict=True)):
        # one unpadded row, scored from its full logits: no batching, no chunking
        seq = torch.tensor([p + c])
        labels = torch.tensor([[IGNORE_INDEX] * len(p) + c])
        with torch.no_grad():
            alone = sequence_logps(model(input_ids=seq).logits, labels).sum.item()
        assert batched[i].item() == pytest.approx(alone, rel=1e-5), i


# -- sampling ------------------------------------------------------------------------------


def spy_generate(model) -> list[dict]:
    """The keyword arguments of every `model.generate` call (input_ids as its shape)."""
    calls, generate = [], model.generate

    def spy(**kwargs):
        calls.append(kwargs | {"input_ids": tuple(kwargs["input_ids"].shape)})
        return generate(**kwargs)

    model.generate = spy
    return calls


def test_greedy_batches_give_each_prompt_its_own_completion_in_order(tokenizer):
    """A float64 model (no rounding differences between padded and unpadded rows) whose
    greedy completions end with EOS at different steps: under a budget of a few prompts per
    batch, the completions are those of one prompt at a time, in the prompts' order, each
    cut after its EOS while its batch goes on."""
    model = build_tiny_llama(1, vocab_size=len(tokenizer))
    ids = prompts(tokenizer, 8)
    config = SamplingConfig(temperature=0, max_new_tokens=8)
    alone = [sample(model, tokenizer, [p], config).completion_ids[0] for p in ids]
    eos = tokenizer.eos_token_id
    ended = [c for c in alone if c[-1] == eos]
    assert 1 < len(ended) < len(alone) and len({len(c) for c in ended}) > 1  # stops vary
    calls = spy_generate(model)
    budget = 50  # prompts of 6-15 tokens + 8 new ones: 2 or 3 prompts per batch
    batched = sample(model, tokenizer, ids, config, batch_tokens=budget)
    assert batched.completion_ids == alone
    assert batched.prompt_ids == ids
    texts = tokenizer.batch_decode(alone, skip_special_tokens=True)
    assert batched.texts == [t.strip() for t in texts]
    assert_within(budget, [(rows, width + 8) for rows, width in (c["input_ids"] for c in calls)])
    assert all(c["use_cache"] is True and c["eos_token_id"] == eos for c in calls)
    assert batched.new_tokens == sum(map(len, alone)) and batched.generate_seconds > 0


def test_seeded_sampling_is_reproducible_under_a_budget(tokenizer):
    model = build_tiny_llama(1, vocab_size=len(tokenizer))
    ids = prompts(tokenizer, 6)
    config = SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=4)
    a = sample(model, tokenizer, ids, config, seed=3, batch_tokens=40)
    torch.manual_seed(1234)  # the caller's RNG state does not matter
    b = sample(model, tokenizer, ids, config, seed=3, batch_tokens=40)
    c = sample(model, tokenizer, ids, config, seed=4, batch_tokens=40)
    assert a.completion_ids == b.completion_ids != c.completion_ids


def test_the_kv_cache_is_used_when_the_checkpoint_says_use_cache_false(tmp_path, tokenizer):
    """A checkpoint whose config says `use_cache: false` (what training with gradient
    checkpointing sets) and that has no generation_config.json: transformers then
    generates without a cache, re-running the whole sequence for every new token. `sample`
    turns the cache on: after the prompt, each step feeds the model one token."""
    from raydaa.io.models import pretrained_model

    trained = build_tiny_model(seed=0)
    trained.config.use_cache = False
    trained.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    assert json.loads((tmp_path / "config.json").read_text())["use_cache"] is False
    model = pretrained_model(str(tmp_path)).eval()
    ids = prompts(tokenizer, 3)
    steps = 4
    widths = record_forwards(model)
    # the problem: generate without use_cache=True feeds the model the growing sequence
    prompt = torch.tensor([ids[0]])
    model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                   max_new_tokens=steps, min_new_tokens=steps, pad_token_id=0)
    assert [w for _, w in widths] == [len(ids[0]) + k for k in range(steps)]
    widths.clear()
    sample(model, tokenizer, ids, SamplingConfig(temperature=0, max_new_tokens=steps),
           batch_tokens=10**6)
    width = max(map(len, ids))
    assert widths[0] == (3, width)
    assert widths[1:] and all(w == (3, 1) for w in widths[1:])  # one new token per step


# -- the evaluation model's dtype and measurements -------------------------------------------


def test_bf16_scenario_evaluates_in_bf16_and_kl_comes_back_float(tmp_path, monkeypatch):
    from raydaa.config.scenario import load_scenario
    from raydaa.evaluate import policy as policy_module
    from raydaa.io import models

    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = 6
    scenario.generation.max_new_tokens = 5
    scenario.resources.bf16 = True
    scenario.resources.batch_tokens = 64
    reference = tmp_path / "hf"
    build_tiny_model(0).save_pretrained(reference)
    build_tiny_tokenizer().save_pretrained(reference)
    loaded = []
    original = models.pretrained_model

    def recording(path, **kwargs):
        model = original(path, **kwargs)
        loaded.append(next(model.parameters()).dtype)
        return model

    monkeypatch.setattr(models, "pretrained_model", recording)
    metrics = policy_module.evaluate_policy(str(reference), str(reference), scenario)
    assert loaded and all(dtype == torch.bfloat16 for dtype in loaded)  # baseline, policy, ref
    for key in ("kl", "kl_low", "kl_high", "kl_k3"):
        assert isinstance(metrics[key], float)
    assert metrics["kl"] == 0.0 and metrics["kl_k3"] == 0.0  # the reference against itself
    assert math.isfinite(metrics["sampling_tokens_per_s"]) and metrics["sampling_tokens_per_s"] > 0
    assert metrics["eval_peak_rss_mib"] > 10
    assert ("eval_peak_gpu_mib" in metrics) == torch.cuda.is_available()

    scenario.resources.bf16 = False
    loaded.clear()
    model = policy_module.eval_model(str(reference), scenario)
    assert loaded == [torch.float32] and next(model.parameters()).dtype == torch.float32


def test_kl_logps_of_a_bf16_model_are_float64_sums_of_float32_terms(tokenizer):
    """A bf16 model's completion log-probs: each token's log-softmax in float32 and the
    sums kept in float64, not rounded to bf16 (whose 8 bits would move a sum of -30 by up
    to 0.06); close to the float32 model's."""
    model32 = build_tiny_model(seed=0).eval()
    model16 = build_tiny_model(seed=0).to(torch.bfloat16).eval()
    ids = prompts(tokenizer, 4)
    completions = [[5, 6, 7, 8, 9, 10, 11, 12][: 5 + i] for i in range(4)]
    pad = tokenizer.pad_token_id
    lp16 = completion_logps(model16, ids, completions, pad, batch_tokens=1)  # a row a time
    assert lp16.dtype == torch.float64
    for i, (p, c) in enumerate(zip(ids, completions, strict=True)):
        with torch.no_grad():
            logits = model16(input_ids=torch.tensor([p + c])).logits  # bf16
        token = torch.log_softmax(logits[0, len(p) - 1 : -1].double(), -1)
        expected = token.gather(1, torch.tensor(c).unsqueeze(1)).sum().item()
        assert lp16[i].item() == pytest.approx(expected, rel=1e-6), i
    lp32 = completion_logps(model32, ids, completions, pad, batch_tokens=32)
    torch.testing.assert_close(lp16, lp32, rtol=0.05, atol=0.2)  # bf16 weights: close


# -- the reference cache ----------------------------------------------------------------------


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """Tokenized preference rows of varied lengths, row indices not their positions."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        prompt = [1] + [rng.randrange(3, 25) for _ in range(rng.randint(2, 10))]
        chosen = [rng.randrange(3, 25) for _ in range(rng.randint(1, 12))]
        rejected = [rng.randrange(3, 25) for _ in range(rng.randint(1, 12))]
        rows.append({
            "index": 1000 - 7 * k,
            "chosen_input_ids": prompt + chosen,
            "chosen_labels": [IGNORE_INDEX] * len(prompt) + chosen,
            "rejected_input_ids": prompt + rejected,
            "rejected_labels": [IGNORE_INDEX] * len(prompt) + rejected,
        })
    return rows


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "hf"
    build_tiny_model(0).save_pretrained(path)
    return path


def assert_same_cache(table, expected) -> None:
    assert table.column_names == expected.column_names
    assert table.column("index").to_pylist() == expected.column("index").to_pylist()
    for name in ("chosen_count", "rejected_count"):
        assert table.column(name).to_pylist() == expected.column(name).to_pylist()
    for name in ("chosen_logp_sum", "rejected_logp_sum"):
        torch.testing.assert_close(
            torch.tensor(table.column(name).to_pylist(), dtype=torch.float64),
            torch.tensor(expected.column(name).to_pylist(), dtype=torch.float64),
            rtol=1e-6, atol=1e-5,
        )


def test_reference_cache_table_does_not_depend_on_the_budget(reference_dir, monkeypatch):
    from raydaa.train import refcache

    rows = preference_rows(14)
    whole = refcache._score_shard(str(reference_dir), rows, 0, batch_tokens=10**9)
    assert whole.column("index").to_pylist() == [r["index"] for r in rows]  # rows' order
    shapes = []
    forward = refcache.concatenated_forward

    def recording(model, batch, pad):
        chosen, rejected = batch["chosen_input_ids"], batch["rejected_input_ids"]
        shapes.append((2 * chosen.shape[0], max(chosen.shape[1], rejected.shape[1])))
        return forward(model, batch, pad)

    monkeypatch.setattr(refcache, "concatenated_forward", recording)
    budget = 96  # pairs of 2 x 3-22 tokens: 1 to 4 pairs per forward
    small = refcache._score_shard(str(reference_dir), rows, 0, batch_tokens=budget)
    assert_within(budget, shapes)  # (2B, T) forwards
    assert_same_cache(small, whole)


@pytest.mark.ray
def test_reference_cache_tasks_report_their_peak_memory(reference_dir, ray_cluster):
    import datasets

    from raydaa.train import refcache

    rows = preference_rows(10, seed=2)
    lines = []
    table = refcache.compute_reference_logps(
        reference_dir, datasets.Dataset.from_list(rows), pad_token_id=0, num_workers=2,
        batch_tokens=48, say=lines.append,
    )
    expected = refcache._score_shard(str(reference_dir), rows, 0, batch_tokens=10**9)
    assert_same_cache(table, expected.sort_by("index"))
    assert "10/10 pairs scored" in lines[-1] and "peak RSS of a scoring task" in lines[-1]
    assert float(lines[-1].split("task ")[-1].split(" MiB")[0].replace(",", "")) > 10
