"""The built-in `rehearsal` scenario: the paper's 8B UltraFeedback scenario (llama31-8b-uf)
in its exact shape, at tiny widths, built in code so it runs offline on a laptop's CPU.

Shape kept from Llama 3.1 8B: the 128,256-token vocabulary with Llama 3's special tokens at
their ids and its chat template, EOS `<|eot_id|>` and no pad token of its own, untied input
and output embeddings, grouped-query attention, rope_theta 500,000 with Llama 3.1's rope
scaling, and 4096-token windows. What shrinks: hidden 64, 2 layers, 4 heads (2 KV heads),
so the LM head (128,256 x 64) is most of the ~16.5M parameters, as the vocabulary's share
of a real model's memory is what long-window scoring and ZeRO-3 must get right.

The tokenizer is word-level over 128,000 deterministic pronounceable words ("ba", "beti",
"dutefe", ...), so a text's length in tokens is its number of words: the data
(`rehearsal_data`) places rows at exact token lengths. The judge is a random-init reward
model of the same shape, saved once per machine (`reward_model_path`) so that the
scenario YAML names it without a path (`judge.model: rehearsal:reward_model`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

REHEARSAL_MAX_LENGTH = 4096  # llama31-8b-uf's max_length (paper Table 4, UF)
VOCAB_SIZE = 128_256  # Llama 3's: 128,000 regular tokens + 256 special ones
N_WORDS = 128_000
ROLES = ("system", "user", "assistant")  # regular words, as in Llama 3's vocabulary
BOS, END_OF_TEXT, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
NAMED_SPECIALS = {128000: BOS, 128001: END_OF_TEXT, 128006: START_HEADER, 128007: END_HEADER,
                  128009: EOT}
# Llama 3's template (without 3.1-instruct's default system prompt): every turn ends with
# <|eot_id|>, so a completion ends with EOS by itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] }}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Template tokens around the contents: BOS, 4 per message (header start, role, header end,
# eot; the "\n\n" is whitespace, which the word-level tokenizer drops), and the 3 of the
# generation prompt. `rehearsal_data` sizes rows with these.
BOS_TOKENS, MESSAGE_TOKENS, GENERATION_PROMPT_TOKENS = 1, 4, 3

WIDTHS = {"hidden_size": 64, "intermediate_size": 224, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2}
# Llama 3.1 8B's positions: rope_theta 500,000 and its "llama3" rope scaling to 128K, so
# 4096-token windows plus sampled tokens fit with room to spare (RoPE tables are computed
# per forward from the positions used, so the large maximum costs nothing).
ROPE = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
MAX_POSITIONS = 131_072
REWARD_MODEL = "reward_model"
"""The asset name of the judge: `judge.model: rehearsal:reward_model`."""
REWARD_MODEL_VERSION = 1  # bump when the reward model's builder changes: a new cache folder


def special_tokens() -> dict[int, str]:
    """The 256 special tokens by id: Llama 3's named ones at their ids, the rest
    `<|reserved_special_token_N|>` in id order (N = 0..250, as in Llama 3)."""
    out, n = {}, 0
    for i in range(N_WORDS, VOCAB_SIZE):
        out[i] = NAMED_SPECIALS.get(i) or f"<|reserved_special_token_{n}|>"
        n += i not in NAMED_SPECIALS
    return out


@lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """The 128,000 regular tokens: the three role names, then consonant-vowel syllables
    in order (1, 2, then 3 syllables); the same on every machine, no seed."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    out = list(ROLES)
    for n in (1, 2, 3):
        for combo in itertools.product(syllables, repeat=n):
            out.append("".join(combo))
            if len(out) == N_WORDS:
                return tuple(out)
    raise AssertionError("not enough syllable combinations")


def build_rehearsal_tokenizer() -> PreTrainedTokenizerFast:
    """Llama 3's tokenizer in shape: 128,256 entries, its special tokens at their ids, its
    chat template, BOS `<|begin_of_text|>` (added to plain text, as Llama 3's is), EOS
    `<|eot_id|>`, and no pad token (raydaa sets pad = EOS, as for Llama 3 from the hub)."""
    specials = special_tokens()
    vocab = {w: i for i, w in enumerate(words())} | {t: i for i, t in specials.items()}
    # Word-level: a word outside the vocabulary (none in the scenario's data) maps to the
    # last reserved token; Llama 3's byte-level BPE has no unknown token at all.
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[VOCAB_SIZE - 1]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, 128000)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOT,
        additional_special_tokens=[t for t in specials.values() if t not in (BOS, EOT)],
        chat_template=CHAT_TEMPLATE, model_max_length=MAX_POSITIONS,
    )


def _llama_config(**extra) -> LlamaConfig:
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, **WIDTHS, max_position_embeddings=MAX_POSITIONS,
        rope_parameters=dict(ROPE), tie_word_embeddings=False,  # untied, as Llama 3.1 8B
        rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128009, pad_token_id=None, **extra,
    )
    config._attn_implementation = "sdpa"  # the scenario's attn_implementation
    return config


def _seeded(cls, config, seed: int):
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        return cls(config)


def build_rehearsal_model(seed: int = 0) -> LlamaForCausalLM:
    """Random-init Llama 3 in shape (vocabulary 128,256, untied, GQA), ~16.5M parameters."""
    return _seeded(LlamaForCausalLM, _llama_config(), seed)


def build_rehearsal_reward_model(seed: int = 0) -> LlamaForSequenceClassification:
    """Random-init reward model of the same shape: one output, no pad id (as a Llama
    reward model: raydaa's judge then scores each answer unpadded, at its last token)."""
    return _seeded(LlamaForSequenceClassification, _llama_config(num_labels=1), seed)


def cache_dir() -> Path:
    """Where built-in assets are saved once per machine: $RAYDAA_CACHE/builtin (default
    ~/.cache/raydaa/builtin, beside raydaa.io.storage's copies of remote models)."""
    return Path(os.environ.get("RAYDAA_CACHE", Path.home() / ".cache" / "raydaa")) / "builtin"


def reward_model_path(seed: int = 0) -> str:
    """A local checkpoint folder of the judge (model + tokenizer), built and saved on first
    use. Every process that needs it (a Ray worker on any node, a fresh CLI) finds or makes
    the same folder: the build is deterministic, written under a temporary name and
    renamed into place, and the first rename wins."""
    target = cache_dir() / f"rehearsal-reward-model-v{REWARD_MODEL_VERSION}-seed{seed}"
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_rehearsal_reward_model(seed).save_pretrained(tmp)
        build_rehearsal_tokenizer().save_pretrained(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
