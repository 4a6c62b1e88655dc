"""Built-in scenarios that need no download. Only `tiny` for now: a synthetic alignment
task with a local tokenizer, a random-init small Llama, noisy data in the public datasets'
schemas, and a programmatic gold judge."""

from raydaa.scenarios.tiny import (
    TINY_MAX_LENGTH,
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_datasets,
)
from raydaa.scenarios.tiny_task import gold_prefers, gold_score

BUILTIN_SCENARIOS = ("tiny",)

__all__ = [
    "BUILTIN_SCENARIOS",
    "TINY_MAX_LENGTH",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "gold_prefers",
    "gold_score",
    "tiny_datasets",
]
