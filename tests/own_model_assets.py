"""A user's own model and data, built offline: what `docs/own-model.md` starts from.

Not the built-in `tiny` (a Llama with a word-level Zephyr tokenizer, data in code): here
everything is on disk the way a user brings it.

- policy: a locally saved random-init Qwen2 causal LM (`save_pretrained`) with a byte-level
  BPE tokenizer trained on the data, Qwen's ChatML template (`<|im_start|>role\\n...
  <|im_end|>\\n`, a default system turn), no BOS token, eos `<|im_end|>`, pad
  `<|endoftext|>`, as Qwen2.5's instruct tokenizers have;
- data: TRL-format JSONL files: conversational preference pairs with an explicit prompt
  ({"prompt": [user], "chosen": [assistant], "rejected": [assistant]}), SFT rows
  ({"messages": [user, assistant]}) and held-out validation pairs, from the digit-list
  task of `raydaa.scenarios.tiny_task` (sort / reverse / increment a few digits);
- judge: a locally saved reward model, `AutoModelForSequenceClassification` with one
  output (a Llama, so not the policy's architecture), with its own word-level tokenizer,
  a Zephyr template and no pad token (Llama's tokenizers ship none).

The reward model is random-init: an end-to-end test checks that the reward-model judge
path loads it by path, scores both answers and yields win rates in [0, 1], not that its
verdicts are wise. Every builder is deterministic in its seed and needs no network.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from raydaa.scenarios.tiny_task import OPS, WORDS, gold_score, make_prompt, write_answer

MAX_LENGTH = 96  # ChatML prompt with its system turn is ~25 BPE tokens, an answer <= 10
SYSTEM = "You are a helpful assistant."
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2.5's template, shortened: a default system turn, then every turn as
# <|im_start|>role\ncontent<|im_end|>\n; the generation prompt opens the assistant turn.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The reward model's own template (Zephyr's): another tokenizer than the policy's.
ZEPHYR_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SFT_WRITER = {"p_correct": 0.6, "p_systematic": 0.8, "max_slips": 1}
PAIR_WRITER = {"p_correct": 0.5, "p_systematic": 0.8, "max_slips": 2}


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _assistant(answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _prompts(rng: random.Random, n: int, seen: set[str]) -> list[str]:
    """`n` prompts, none repeated within or across the files (validation stays held out)."""
    out = []
    while len(out) < n:
        prompt = make_prompt(rng)
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
    return out


def _pair(rng: random.Random, prompt: str) -> dict:
    """A TRL conversational preference row: the better of two writers' answers is chosen."""
    a = write_answer(rng, prompt, **PAIR_WRITER)
    b = write_answer(rng, prompt, **PAIR_WRITER)
    while gold_score(prompt, a) == gold_score(prompt, b):
        b = write_answer(rng, prompt, **PAIR_WRITER)
    if gold_score(prompt, a) < gold_score(prompt, b):
        a, b = b, a
    return {"prompt": _user(prompt), "chosen": _assistant(a), "rejected": _assistant(b)}


def write_task_data(folder: str | Path, *, n_sft: int = 256, n_pref: int = 256, n_val: int = 32,
                    seed: int = 0) -> dict[str, Path]:
    """Write sft.jsonl, preferences.jsonl and validation.jsonl (TRL formats) under `folder`.

    Returns {"sft", "preference", "validation"} -> path. Prompts are disjoint across files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng, seen = random.Random(f"own-{seed}"), set()
    val, pref, sft = (_prompts(rng, n, seen) for n in (n_val, n_pref, n_sft))
    sft_rows = [{"messages": _user(p) + _assistant(write_answer(rng, p, **SFT_WRITER))} for p in sft]
    return {
        "sft": _write_jsonl(folder / "sft.jsonl", sft_rows),
        "preference": _write_jsonl(folder / "preferences.jsonl", [_pair(rng, p) for p in pref]),
        "validation": _write_jsonl(folder / "validation.jsonl", [_pair(rng, p) for p in val]),
    }


def _corpus(seed: int = 0, n: int = 2000) -> list[str]:
    """Texts a tokenizer is trained on: the task's prompts and answers."""
    rng = random.Random(f"own-corpus-{seed}")
    texts = [SYSTEM, "system", "user", "assistant", " ".join(OPS + WORDS)]
    for _ in range(n):
        prompt = make_prompt(rng)
        texts += [prompt, write_answer(rng, prompt, **PAIR_WRITER)]
    return texts


def build_chatml_tokenizer(seed: int = 0) -> PreTrainedTokenizerFast:
    """Byte-level BPE (digits split one per token, as Qwen2's pre-tokenizer does) trained
    on the task's texts, with Qwen's special tokens and ChatML template; no BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START], chat_template=CHATML_TEMPLATE,
        model_max_length=MAX_LENGTH, padding_side="right",
    )


def save_qwen2_model(folder: str | Path, *, seed: int = 0, hidden_size: int = 48) -> Path:
    """A tiny random-init Qwen2ForCausalLM (2 layers) and its tokenizer, saved to `folder`
    with `save_pretrained` as a user's checkpoint would be."""
    folder = Path(folder)
    tokenizer = build_chatml_tokenizer(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2 * MAX_LENGTH, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_judge_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the task's words with Zephyr's template; like Llama's
    tokenizers it has BOS and EOS but no pad token."""
    specials = ("<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>")
    words = sorted({w for text in _corpus() for w in text.split()} - set(specials))
    vocab = {t: i for i, t in enumerate(specials + tuple(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=list(specials[3:]), chat_template=ZEPHYR_TEMPLATE,
    )


def save_reward_model(folder: str | Path, *, seed: int = 1) -> Path:
    """A random-init LlamaForSequenceClassification (num_labels=1) and its tokenizer,
    saved to `folder`: a reward model the `reward_model` judge loads by path. Its scores
    are random but deterministic; see the module docstring."""
    folder = Path(folder)
    tokenizer = build_judge_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        num_labels=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_all(root: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Model, reward model and data under `root`: {"model", "reward_model", "sft",
    "preference", "validation"} -> path."""
    root = Path(root)
    return {
        "model": save_qwen2_model(root / "my-qwen2", seed=seed),
        "reward_model": save_reward_model(root / "my-rm"),
        **write_task_data(root / "data", seed=seed),
    }


if __name__ == "__main__":  # `python tests/own_model_assets.py DIR`: the docs' example assets
    import sys

    for key, path in build_all(sys.argv[1] if len(sys.argv) > 1 else "own_model").items():
        print(f"{key}: {path}")
