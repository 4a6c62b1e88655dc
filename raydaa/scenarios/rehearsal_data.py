"""The `rehearsal` scenario's data: UltraChat-200k's schema for SFT and
UltraFeedback-binarized's for preference pairs, with long multi-turn prompts at exact token
lengths, deterministic in the seed.

Each row is a conversation of 2-4 user turns with the assistant's turns between them (a long
first message, as when a document is pasted, then follow-ups), and a short final answer:
chosen and rejected share every turn but the last, which raydaa's UltraFeedback reader
splits off with TRL's extract_prompt. Words are the tokenizer's (one word, one token), so a
row's prompt length in tokens is set exactly. Per training set of 100 rows:

- most rows: prompts of 200-2,000 tokens (log-uniform);
- 3 rows: prompts just under 4,096 whose prompt + answer exceeds it, so the prompt is cut
  from the left (raydaa.data.tokenize.truncate);
- 1 row: a prompt alone over 4,096 tokens, dropped and counted as `prompt_over_length`.
  Exactly 1 of 100 rows is raydaa's limit (raydaa.data.validation.DEFAULT_THRESHOLD: 1%
  bad rows); one more would make every stage refuse the set.

Answers are short (10-24 words): the loss and the LM head only see completion tokens, and
the head (128,256 x hidden) is the costly part of scoring a token. The validation set has
no over-length prompt (evaluation samples on its prompts as they are), and its first rows
are the longest: evaluation samples on the first `generation.num_prompts`.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from functools import lru_cache

import datasets

from raydaa.scenarios.rehearsal import (
    BOS_TOKENS,
    GENERATION_PROMPT_TOKENS,
    MESSAGE_TOKENS,
    N_WORDS,
    REHEARSAL_MAX_LENGTH,
    ROLES,
    words,
)
from raydaa.scenarios.tiny import PREF_FEATURES, SFT_FEATURES

TYPICAL_PROMPT = (200, 2000)  # tokens, log-uniform
NEAR_LIMIT_ROWS = 3  # prompt < 4096 <= prompt + answer: left-truncated
OVER_LIMIT_ROWS = 1  # prompt > 4096: dropped (1 of 100 = the 1% threshold)
LONG_VALIDATION_PROMPT = (2500, 3800)  # the first validation rows, where evaluation samples
ANSWER_WORDS = (10, 24)  # + <|eot_id|>: 11-25 completion tokens
ANSWER_VOCAB = 4096  # answers draw Zipf-like from these words, prompts from all 128,000
FIRST_TURN_SHARE = 0.6  # of a prompt's words, in its first user message
FIRST_CONTENT_WORD = len(ROLES)  # content words: the vocabulary after the role names


@lru_cache(maxsize=1)
def _zipf_cumulative() -> list[float]:
    total, out = 0.0, []
    for rank in range(1, ANSWER_VOCAB + 1):
        total += 1.0 / rank
        out.append(total)
    return out


def _text(rng: random.Random, n: int, *, answer: bool = False) -> str:
    vocab = words()
    if answer:
        cum = _zipf_cumulative()
        picks = [bisect.bisect(cum, rng.random() * cum[-1]) for _ in range(n)]
        return " ".join(vocab[FIRST_CONTENT_WORD + i] for i in picks)
    return " ".join(vocab[rng.randrange(FIRST_CONTENT_WORD, N_WORDS)] for _ in range(n))


def prompt_tokens(turns: list[dict[str, str]]) -> int:
    """Tokens of `turns` rendered with the chat template and the generation prompt."""
    body = sum(MESSAGE_TOKENS + len(t["content"].split()) for t in turns)
    return BOS_TOKENS + body + GENERATION_PROMPT_TOKENS


def _turns(rng: random.Random, length: int) -> list[dict[str, str]]:
    """user, assistant, ..., user turns rendering to exactly `length` prompt tokens."""
    users = rng.randint(2, 4)
    n = 2 * users - 1
    budget = length - BOS_TOKENS - GENERATION_PROMPT_TOKENS - MESSAGE_TOKENS * n
    if budget < 4 * n:
        raise ValueError(f"prompt length {length} too short for {n} turns")
    first = min(round(budget * FIRST_TURN_SHARE), budget - 4 * (n - 1))
    extra = budget - first - 4 * (n - 1)  # shared out over the other turns, 4 words each at least
    cuts = sorted(rng.randint(0, extra) for _ in range(n - 2))
    sizes = [first, *(4 + b - a for a, b in zip([0, *cuts], [*cuts, extra], strict=True))]
    assert sum(sizes) == budget and min(sizes) >= 4, sizes
    roles = ["user" if i % 2 == 0 else "assistant" for i in range(n)]
    return [{"content": _text(rng, k), "role": r} for k, r in zip(sizes, roles, strict=True)]


def _lengths(rng: random.Random, n: int, *, validation: bool, long_first: int) -> list[tuple[int, int]]:
    """(prompt tokens, answer words) per row: typical rows, a few near and over the limit
    at random positions (training sets), the long rows first (validation)."""
    low, high = TYPICAL_PROMPT
    rows = []
    for _ in range(n):
        answer = rng.randint(*ANSWER_WORDS)
        rows.append((round(math.exp(rng.uniform(math.log(low), math.log(high)))), answer))
    if validation:
        for i in range(long_first):
            rows[i] = (rng.randint(*LONG_VALIDATION_PROMPT), rows[i][1])
        return rows
    special = rng.sample(range(n), NEAR_LIMIT_ROWS + OVER_LIMIT_ROWS)
    for i in special[:NEAR_LIMIT_ROWS]:  # answer tokens are its words + <|eot_id|>
        answer = rows[i][1]
        rows[i] = (REHEARSAL_MAX_LENGTH - rng.randint(1, answer), answer)
    for i in special[NEAR_LIMIT_ROWS:]:
        rows[i] = (rng.randint(REHEARSAL_MAX_LENGTH + 100, REHEARSAL_MAX_LENGTH + 500), rows[i][1])
    return rows


def _prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()  # as UltraFeedback's prompt_id


def _assistant(text: str) -> dict[str, str]:
    return {"content": text, "role": "assistant"}


def _sft_rows(rng: random.Random, n: int) -> dict[str, list]:
    rows = {"prompt": [], "prompt_id": [], "messages": []}
    for length, answer in _lengths(rng, n, validation=False, long_first=0):
        turns = _turns(rng, length)
        rows["prompt"].append(turns[0]["content"])
        rows["prompt_id"].append(_prompt_id(turns[0]["content"]))
        rows["messages"].append(turns + [_assistant(_text(rng, answer, answer=True))])
    return rows


def _pref_rows(rng: random.Random, n: int, *, validation: bool, long_first: int = 0) -> dict[str, list]:
    rows = {name: [] for name in PREF_FEATURES}
    for length, answer in _lengths(rng, n, validation=validation, long_first=long_first):
        turns = _turns(rng, length)
        chosen = turns + [_assistant(_text(rng, answer, answer=True))]
        # the rejected answer: words from anywhere in the vocabulary, of a similar length
        rejected = turns + [_assistant(_text(rng, rng.randint(*ANSWER_WORDS)))]
        high = round(rng.uniform(6.0, 10.0), 2)
        rows["prompt"].append(turns[0]["content"])  # UltraFeedback: the first user message
        rows["prompt_id"].append(_prompt_id(turns[0]["content"]))
        rows["chosen"].append(chosen)
        rows["rejected"].append(rejected)
        rows["messages"].append(chosen)
        rows["score_chosen"].append(high)
        rows["score_rejected"].append(round(rng.uniform(1.0, high - 0.5), 2))
    return rows


@lru_cache(maxsize=4)
def rehearsal_datasets(seed: int = 0, n_sft: int = 100, n_pref: int = 100, n_val: int = 20,
                       long_val: int = 4) -> dict[str, datasets.Dataset]:
    """{"sft_train": UltraChat-schema conversations, "pref_train": UltraFeedback-schema
    pairs, "pref_val": pairs whose first `long_val` prompts are the long evaluation
    prompts}, deterministic in `seed` (cached per process: the sets are read-only)."""
    if min(n_sft, n_pref) < 100 * OVER_LIMIT_ROWS:
        raise ValueError("training sets need >= 100 rows per over-length row (the 1% threshold)")
    sft = _sft_rows(random.Random(f"rehearsal-{seed}-sft"), n_sft)
    pref = _pref_rows(random.Random(f"rehearsal-{seed}-pref"), n_pref, validation=False)
    val = _pref_rows(random.Random(f"rehearsal-{seed}-val"), n_val, validation=True, long_first=long_val)
    return {
        "sft_train": datasets.Dataset.from_dict(sft, features=SFT_FEATURES),
        "pref_train": datasets.Dataset.from_dict(pref, features=PREF_FEATURES),
        "pref_val": datasets.Dataset.from_dict(val, features=PREF_FEATURES),
    }
