"""The built-in offline `tiny` scenario: tokenizer, model and data, all built in code.

It stands in for a real chat model and dataset on a laptop with no GPU and no network:
a word-level tokenizer with a Zephyr-style chat template, a random-init ~1.8M-parameter
Llama, and datasets in the public schemas (UltraChat-200k for SFT, UltraFeedback-binarized
for preferences), so the rest of the pipeline handles `tiny` exactly like a real scenario.
The task and its gold judge live in `tiny_task`.

Noise, on purpose, so alignment has something to fix: SFT demonstrations are right only
60% of the time; preference candidates come from a writer right half the time, so the
chosen answer is usually better than what the SFT policy samples yet imperfect in ~30% of
pairs; and 12% of pairs are mislabelled.

Measured on 2 CPU cores (plain torch loop, batch 32, gold judge on the 200 held-out
prompts): 500 SFT steps (lr 1e-3, ~90 s) give greedy 0.86 / sampled (T=1) 0.60, against
0.09 for random digits and 0.75 for the demonstrations; then 150 DPO steps (beta 0.1,
lr 1e-5, ~45 s) give greedy 0.87 / sampled 0.71. (Times on an idle machine.)
"""

from __future__ import annotations

import hashlib
import random

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from raydaa.scenarios.tiny_task import (
    OPS,
    WORDS,
    gold_score,
    make_prompt,
    parse_prompt,
    write_answer,
)

TINY_MAX_LENGTH = 64  # prompt + completion is at most ~25 tokens; 64 leaves room for slips
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>")
# Zephyr's template: every turn ends with eos, so a completion ends with eos by itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Most mistakes are systematic (echo the input, do another operation): the SFT policy
# learns them as whole answer modes, which preference pairs can then train away. With
# mostly local slips instead, DPO on tiny gained little (win rate ~0.55 vs SFT): the
# calibration behind these numbers is in README "Tiny scenario results".
SFT_WRITER = {"p_correct": 0.55, "p_systematic": 0.8, "max_slips": 1}
PAIR_WRITER = {"p_correct": 0.5, "p_systematic": 0.8, "max_slips": 2}
FLIP_RATE = 0.12  # share of preference pairs whose label is swapped (annotator error)

MESSAGES = datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")})
# HuggingFaceH4/ultrachat_200k (train_sft) and HuggingFaceH4/ultrafeedback_binarized (train_prefs)
SFT_FEATURES = datasets.Features(
    {"prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"), "messages": MESSAGES}
)
PREF_FEATURES = datasets.Features({
    "prompt": datasets.Value("string"),
    "prompt_id": datasets.Value("string"),
    "chosen": MESSAGES,
    "rejected": MESSAGES,
    "messages": MESSAGES,
    "score_chosen": datasets.Value("float64"),
    "score_rejected": datasets.Value("float64"),
})


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the task's words and single digits (25 tokens).

    Digits are split one per token even when written together ("312" -> 3 1 2); plain
    text gets a leading <s> like Llama's tokenizer; `apply_chat_template` works.
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + OPS + WORDS + tuple("0123456789"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=list(SPECIAL_TOKENS[4:]),
        chat_template=CHAT_TEMPLATE, model_max_length=TINY_MAX_LENGTH,
    )


def build_tiny_model(seed: int = 0) -> LlamaForCausalLM:
    """Random-init Llama, ~1.8M parameters: big enough to learn the task partly in a few
    hundred CPU steps, small enough that SFT takes about a minute on 2 cores."""
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=192, intermediate_size=512,
        num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6,
        max_position_embeddings=TINY_MAX_LENGTH, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def _unique_prompts(rng: random.Random, n: int, seen: set) -> list[str]:
    """`n` prompts whose (operation, digits) differ from each other and from `seen`,
    so held-out prompts never appear in training under another phrasing."""
    out = []
    while len(out) < n:
        prompt = make_prompt(rng)
        key = (parse_prompt(prompt)[0], tuple(parse_prompt(prompt)[1]))
        if key not in seen:
            seen.add(key)
            out.append(prompt)
    return out


def _prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()  # as UltraFeedback's prompt_id


def _turns(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]


def _sft_rows(rng: random.Random, prompts: list[str]) -> dict[str, list]:
    rows = {"prompt": [], "prompt_id": [], "messages": []}
    for prompt in prompts:
        rows["prompt"].append(prompt)
        rows["prompt_id"].append(_prompt_id(prompt))
        rows["messages"].append(_turns(prompt, write_answer(rng, prompt, **SFT_WRITER)))
    return rows


def _pref_rows(rng: random.Random, prompts: list[str], flip_rate: float) -> dict[str, list]:
    rows = {name: [] for name in PREF_FEATURES}
    for prompt in prompts:
        a = write_answer(rng, prompt, **PAIR_WRITER)
        b = write_answer(rng, prompt, **PAIR_WRITER)
        while gold_score(prompt, a) == gold_score(prompt, b):  # a pair must carry a preference
            b = write_answer(rng, prompt, **PAIR_WRITER)
        if gold_score(prompt, a) < gold_score(prompt, b):
            a, b = b, a
        if rng.random() < flip_rate:  # the annotator got this one wrong
            a, b = b, a
        # The annotator's 1-10 ratings, consistent with its (possibly wrong) label.
        hi, lo = sorted((1 + 9 * gold_score(prompt, a), 1 + 9 * gold_score(prompt, b)), reverse=True)
        rows["prompt"].append(prompt)
        rows["prompt_id"].append(_prompt_id(prompt))
        rows["chosen"].append(_turns(prompt, a))
        rows["rejected"].append(_turns(prompt, b))
        rows["messages"].append(_turns(prompt, a))
        rows["score_chosen"].append(round(hi, 2))
        rows["score_rejected"].append(round(lo, 2))
    return rows


def tiny_datasets(seed: int = 0, n_sft: int = 4000, n_pref: int = 1500, n_val: int = 200,
                  flip_rate: float = FLIP_RATE) -> dict[str, datasets.Dataset]:
    """The tiny scenario's data, deterministic in `seed`.

    Returns {"sft_train": UltraChat-schema demonstrations, "pref_train": UltraFeedback-
    schema pairs, "pref_val": pairs on held-out prompts (their prompts are the evaluation
    set)}. The three prompt sets are disjoint. Held-out prompts are drawn first, so
    changing `n_sft` or `n_pref` leaves them unchanged.
    """
    rng = random.Random(f"tiny-{seed}-prompts")
    seen: set = set()
    val, pref, sft = (_unique_prompts(rng, n, seen) for n in (n_val, n_pref, n_sft))
    return {
        "sft_train": datasets.Dataset.from_dict(
            _sft_rows(random.Random(f"tiny-{seed}-sft"), sft), features=SFT_FEATURES),
        "pref_train": datasets.Dataset.from_dict(
            _pref_rows(random.Random(f"tiny-{seed}-pref"), pref, flip_rate), features=PREF_FEATURES),
        "pref_val": datasets.Dataset.from_dict(
            _pref_rows(random.Random(f"tiny-{seed}-val"), val, flip_rate), features=PREF_FEATURES),
    }
