"""Batched, seeded sampling on validation prompts (paper Table 8 parameters)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raydaa.config.evaluation import SamplingConfig


@dataclass
class Samples:
    """Prompts and the policy's completions, as text and as token ids."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # up to and including EOS when the model stopped
    texts: list[str]


def render_prompts(prompts: list, tokenizer, conversational: bool) -> list[list[int]]:
    """Token ids of each prompt as the model saw them in training (chat template or plain)."""
    if conversational:
        return [
            tokenizer.apply_chat_template(
                p if isinstance(p, list) else [{"role": "user", "content": p}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            for p in prompts
        ]
    return [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    config: SamplingConfig,
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> Samples:
    """Left-padded batches of `batch_size` prompts through `model.generate`, seeded by
    `seed` (a scenario's `seed`); temperature 0 means greedy. `config` is any
    SamplingConfig, e.g. a scenario's `generation` section."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator_seed = torch.Generator().manual_seed(seed)
    completions: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        # one seed per batch, drawn from the run's seed: batches are reproducible alone
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        sampling = {"do_sample": False}
        if config.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": config.temperature,
                "top_k": config.top_k,
                "top_p": config.top_p,
            }
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            max_new_tokens=config.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        for row in out[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            completions.append(row)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return Samples(
        prompt_ids=list(prompt_ids), completion_ids=completions, texts=[t.strip() for t in texts]
    )
