"""Built-in scenarios that need no download: `tiny`, a synthetic alignment task with a
local tokenizer, a random-init small Llama, noisy data in the public datasets' schemas,
and a programmatic gold judge; and `rehearsal`, the paper's 8B UltraFeedback scenario's
shape (Llama 3's vocabulary and template, 4096-token multi-turn rows, ZeRO-3) at tiny
widths, judged by a local random-init reward model (docs/rehearsal.md)."""

from raydaa.scenarios.rehearsal import (
    REHEARSAL_MAX_LENGTH,
    build_rehearsal_model,
    build_rehearsal_reward_model,
    build_rehearsal_tokenizer,
)
from raydaa.scenarios.rehearsal_data import rehearsal_datasets
from raydaa.scenarios.tiny import (
    TINY_MAX_LENGTH,
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_datasets,
)
from raydaa.scenarios.tiny_task import gold_prefers, gold_score

BUILTIN_SCENARIOS = ("tiny", "rehearsal")

__all__ = [
    "BUILTIN_SCENARIOS",
    "REHEARSAL_MAX_LENGTH",
    "TINY_MAX_LENGTH",
    "build_rehearsal_model",
    "build_rehearsal_reward_model",
    "build_rehearsal_tokenizer",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "gold_prefers",
    "gold_score",
    "rehearsal_datasets",
    "tiny_datasets",
]
