"""Rendering rows with the tokenizer's chat template (conversational rows) or as-is
(plain text)."""

from __future__ import annotations

from typing import Any

from trl.data_utils import apply_chat_template


def render(prompt: Any, completions: tuple[Any, ...], tokenizer: Any) -> tuple[str, tuple[str, ...]]:
    """Prompt and completion texts: chat template for messages, as-is for plain text.

    Through TRL's `apply_chat_template`: the prompt with add_generation_prompt=True, each
    completion as what the template adds after it (the assistant turn and its end-of-turn).
    """
    if isinstance(prompt, str):
        return prompt, completions
    if len(completions) == 1:
        out = apply_chat_template({"prompt": prompt, "completion": completions[0]}, tokenizer)
        return out["prompt"], (out["completion"],)
    out = apply_chat_template({"prompt": prompt, "chosen": completions[0], "rejected": completions[1]}, tokenizer)
    return out["prompt"], (out["chosen"], out["rejected"])

