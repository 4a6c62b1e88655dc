"""The offline `tiny` scenario: determinism, public schemas, tokenizer, model size, gold
judge and the noise levels the alignment experiments rely on."""

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from raydaa.scenarios import (
    TINY_MAX_LENGTH,
    build_tiny_model,
    build_tiny_tokenizer,
    gold_prefers,
    gold_score,
    tiny_datasets,
)
from raydaa.scenarios.tiny import FLIP_RATE
from raydaa.scenarios.tiny_task import parse_prompt

MESSAGES = datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")})


@pytest.fixture(scope="module")
def data():
    return tiny_datasets(0)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_deterministic_in_seed():
    a, b, c = (tiny_datasets(s, n_sft=60, n_pref=40, n_val=10) for s in (3, 3, 4))
    for split in ("sft_train", "pref_train", "pref_val"):
        assert a[split].to_dict() == b[split].to_dict()
        assert a[split].to_dict() != c[split].to_dict()


def test_held_out_prompts_do_not_move_with_train_sizes():
    small, big = tiny_datasets(0, n_sft=50, n_pref=30, n_val=20), tiny_datasets(0, n_sft=90, n_pref=70, n_val=20)
    assert small["pref_val"]["prompt"] == big["pref_val"]["prompt"]


def test_schemas_match_ultrachat_and_ultrafeedback(data):
    # HuggingFaceH4/ultrachat_200k train_sft and HuggingFaceH4/ultrafeedback_binarized train_prefs
    assert data["sft_train"].features == datasets.Features(
        {"prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"), "messages": MESSAGES})
    uf = datasets.Features({
        "prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"), "chosen": MESSAGES,
        "rejected": MESSAGES, "messages": MESSAGES, "score_chosen": datasets.Value("float64"),
        "score_rejected": datasets.Value("float64"),
    })
    assert data["pref_train"].features == uf and data["pref_val"].features == uf
    row = data["pref_train"][0]
    # UltraFeedback repeats the prompt as the first (user) turn of chosen and rejected.
    assert row["chosen"][0] == row["rejected"][0] == {"content": row["prompt"], "role": "user"}
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
    assert row["score_chosen"] >= row["score_rejected"]
    assert (len(data["sft_train"]), len(data["pref_train"]), len(data["pref_val"])) == (4000, 1500, 200)


def test_prompt_sets_are_disjoint(data):
    def keys(ds):
        return {(op, tuple(d)) for op, d in map(parse_prompt, ds["prompt"])}

    sft, pref, val = (keys(data[s]) for s in ("sft_train", "pref_train", "pref_val"))
    assert len(sft) == 4000 and len(pref) == 1500 and len(val) == 200
    assert not (sft & pref or sft & val or pref & val)


def test_sequences_fit_the_window(data, tokenizer):
    longest = max(len(tokenizer.apply_chat_template(m)["input_ids"]) for m in data["pref_train"]["chosen"])
    assert longest < TINY_MAX_LENGTH


def test_tokenizer_chat_template_and_round_trip(tokenizer, tmp_path):
    messages = [{"role": "user", "content": "sort 312"}, {"role": "assistant", "content": "1 2 3"}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|user|>\nsort 312</s>\n<|assistant|>\n"
    ids = tokenizer.apply_chat_template(messages)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<s>", "<|user|>", "sort", "3", "1", "2", "</s>", "<|assistant|>", "1", "2", "3", "</s>"]
    assert tokenizer("sort 3 1 2")["input_ids"][0] == tokenizer.bos_token_id  # Llama-like BOS on plain text
    assert tokenizer("sort zebra")["input_ids"][-1] == tokenizer.unk_token_id
    assert len(tokenizer) < 100

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.apply_chat_template(messages)["input_ids"] == ids
    assert loaded("please sort 3 1 2")["input_ids"] == tokenizer("please sort 3 1 2")["input_ids"]
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert loaded.decode(ids[8:], skip_special_tokens=True) == "1 2 3"


def test_model_size_seed_and_forward(tokenizer):
    model = build_tiny_model(seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 5_000_000
    assert model.config.vocab_size == len(tokenizer)
    state = torch.get_rng_state()
    same, other = build_tiny_model(seed=0), build_tiny_model(seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # building does not disturb the caller's RNG
    weights = [p for _, p in sorted(model.state_dict().items())]
    assert all(torch.equal(a, b) for a, b in zip(weights, [p for _, p in sorted(same.state_dict().items())],
                                                  strict=True))
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)
    ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "sort 3 1 2"}])["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


@pytest.mark.parametrize(("prompt", "answer", "score"), [
    ("sort 3 1 2", "1 2 3", 1.0),
    ("please sort 3 1 2", "123", 1.0),  # digits count one by one, spaces or not
    ("sort the list 3 1 2", "1 3 2", 1 / 3),  # one swap: only the first position right
    ("sort 3 1 2", "1 2", 2 / 3),  # missing item
    ("sort 3 1 2", "1 2 3 4", 3 / 4),  # extra item
    ("sort 3 1 2", "", 0.0),
    ("sort 3 1 2", "one two three", 0.0),
    ("reverse these digits 4 0 7", "7 0 4", 1.0),
    ("reverse 4 0 7", "4 0 7", 1 / 3),  # echoing the input
    ("increment 1 9 5", "2 0 6", 1.0),  # mod 10
    ("increment 1 9 5", "2 10 6", 1 / 4),
])
def test_gold_score(prompt, answer, score):
    assert gold_score(prompt, answer) == pytest.approx(score)


def test_gold_score_accepts_messages():
    prompt = [{"role": "user", "content": "sort 3 1 2"}]
    chosen = prompt + [{"role": "assistant", "content": "1 2 3"}]
    assert gold_score(prompt, chosen) == 1.0
    assert gold_score("sort 3 1 2", [{"role": "assistant", "content": "3 2 1"}]) == pytest.approx(1 / 3)


def test_gold_prefers():
    assert gold_prefers("sort 3 1 2", "1 2 3", "1 3 2") == 1.0
    assert gold_prefers("sort 3 1 2", "1 3 2", "1 2 3") == 0.0
    assert gold_prefers("sort 3 1 2", "1 2 9", "1 2 8") == 0.5  # equal quality: a tie counts half
    assert gold_prefers("sort 3 1 2", "1 2 3", "1 2 3") == 0.5


def test_noise_levels(data):
    """The data is imperfect in the ways the experiments need: SFT demonstrations are a
    mix of right and wrong answers, chosen answers are sometimes imperfect, and about
    FLIP_RATE of the pairs are mislabelled (3.5 sigma bounds for 1500 pairs)."""
    sft = [gold_score(r["prompt"], r["messages"]) for r in data["sft_train"]]
    assert 0.5 < sum(s == 1.0 for s in sft) / len(sft) < 0.7
    assert 0.6 < sum(sft) / len(sft) < 0.9
    pairs = data["pref_train"]
    prefs = [gold_prefers(r["prompt"], r["chosen"], r["rejected"]) for r in pairs]
    assert 0.5 not in prefs  # every pair carries a preference
    flipped = prefs.count(0.0) / len(prefs)
    assert FLIP_RATE - 0.03 < flipped < FLIP_RATE + 0.03
    best = max(gold_score(r["prompt"], c) for r in pairs for c in (r["chosen"], r["rejected"]))
    assert best == 1.0
    chosen_perfect = sum(gold_score(r["prompt"], r["chosen"]) == 1.0 for r in pairs) / len(pairs)
    assert 0.55 < chosen_perfect < 0.8  # chosen is mostly, not always, the best answer
