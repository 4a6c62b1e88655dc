"""The `tiny` scenario's task: digit-list transformations with a graded gold judge.

A prompt asks for one of three operations on a short list of digits, e.g.
"please sort 3 1 2" -> "1 2 3", "reverse the list 4 0 7" -> "7 0 4",
"increment 1 9 5" -> "2 0 6" (each digit + 1, mod 10). The gold judge scores an answer by
the fraction of positions it gets right, so quality is graded rather than pass/fail,
like a reward model's score on real data.

Answers in the data come from noisy "writers" that make the mistakes a weak model makes:
local slips (a wrong, swapped, dropped or extra digit) and systematic ones (echoing the
input, doing another operation). Everything here is plain Python, seeded by the caller's
`random.Random`, so the datasets are reproducible and need no download.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

OPS = ("sort", "reverse", "increment")
# Phrasings of one instruction: the model must find the operation among filler words.
PHRASES = ("{op} {digits}", "please {op} {digits}", "{op} the list {digits}", "{op} these digits {digits}")
WORDS = ("please", "the", "list", "these", "digits")
MIN_DIGITS, MAX_DIGITS = 3, 8

Message = dict[str, str]


def make_prompt(rng: random.Random) -> str:
    """A random instruction, e.g. "sort the list 3 1 2"."""
    n = rng.randint(MIN_DIGITS, MAX_DIGITS)
    digits = " ".join(str(rng.randrange(10)) for _ in range(n))
    return rng.choice(PHRASES).format(op=rng.choice(OPS), digits=digits)


def _text(x: str | Sequence[Message], role: str) -> str:
    """The text of a prompt or completion given as a string or as chat messages
    (then the content of the last message with `role`)."""
    if isinstance(x, str):
        return x
    for message in reversed(x):
        if message["role"] == role:
            return message["content"]
    raise ValueError(f"no {role!r} message in {x!r}")


def parse_prompt(prompt: str | Sequence[Message]) -> tuple[str, list[str]]:
    """(operation, input digits) of a prompt."""
    text = _text(prompt, "user")
    op = next((w for w in text.split() if w in OPS), None)
    if op is None:
        raise ValueError(f"no operation among {OPS} in prompt {text!r}")
    return op, re.findall(r"\d", text)


def apply_op(op: str, digits: Sequence[str]) -> list[str]:
    """The correct answer, as a list of digit strings."""
    if op == "sort":
        return sorted(digits)
    if op == "reverse":
        return list(reversed(digits))
    if op == "increment":
        return [str((int(d) + 1) % 10) for d in digits]
    raise ValueError(f"unknown operation {op!r}")


def answer_items(completion: str | Sequence[Message]) -> list[str]:
    """Items of an answer: each digit on its own, any other word as one (wrong) item."""
    return re.findall(r"\d|[^\d\s]+", _text(completion, "assistant"))


def gold_score(prompt: str | Sequence[Message], completion: str | Sequence[Message]) -> float:
    """Quality in [0, 1]: positions matching the correct answer over the longer length.

    Missing or extra items cost their positions, so "1 2" for "1 2 3" scores 2/3 and
    "1 2 3 4" scores 3/4; an empty answer scores 0.
    """
    target = apply_op(*parse_prompt(prompt))
    items = answer_items(completion)
    hits = sum(a == b for a, b in zip(items, target, strict=False))
    return hits / max(len(items), len(target))


def gold_prefers(prompt: str | Sequence[Message], a: str | Sequence[Message],
                 b: str | Sequence[Message]) -> float:
    """1.0 if the gold judge prefers `a` to `b`, 0.0 if `b`, 0.5 on a tie."""
    sa, sb = gold_score(prompt, a), gold_score(prompt, b)
    return 1.0 if sa > sb else 0.0 if sa < sb else 0.5


def _slip(rng: random.Random, items: list[str]) -> list[str]:
    """One local mistake: a wrong, swapped, dropped or extra digit."""
    items = list(items)
    i = rng.randrange(len(items))
    kind = rng.choice(("substitute", "swap", "drop", "insert"))
    if kind == "substitute":
        items[i] = rng.choice([d for d in "0123456789" if d != items[i]])
    elif kind == "swap" and len(items) > 1:
        j = min(i + 1, len(items) - 1)
        i = j - 1
        items[i], items[j] = items[j], items[i]
    elif kind == "drop" and len(items) > 1:
        del items[i]
    else:
        items.insert(i, str(rng.randrange(10)))
    return items


def write_answer(rng: random.Random, prompt: str, *, p_correct: float, p_systematic: float,
                 max_slips: int) -> str:
    """A noisy writer's answer to `prompt`.

    With probability `p_correct` the answer is right; otherwise, with probability
    `p_systematic`, it echoes the input or does another operation (a misread
    instruction), else it makes 1..`max_slips` local mistakes.
    """
    op, digits = parse_prompt(prompt)
    answer = apply_op(op, digits)
    if rng.random() >= p_correct:
        if rng.random() < p_systematic:
            other = rng.choice([o for o in OPS if o != op] + ["echo"])
            answer = list(digits) if other == "echo" else apply_op(other, digits)
        else:
            for _ in range(rng.randint(1, max_slips)):
                answer = _slip(rng, answer)
    return " ".join(answer)
