"""Batched, seeded sampling on validation prompts (paper Table 8 parameters)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from raydaa.config.defaults import DEFAULT_BATCH_TOKENS
from raydaa.config.evaluation import SamplingConfig
from raydaa.data.token_batches import in_original_order, token_batches


@dataclass
class Samples:
    """Prompts and the policy's completions, as text and as token ids."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # up to and including EOS when the model stopped
    texts: list[str]
    generate_seconds: float = 0.0
    """Wall-clock seconds spent in `model.generate` (all batches)."""

    @property
    def new_tokens(self) -> int:
        """Tokens generated, EOS included, padding after an early EOS not."""
        return sum(map(len, self.completion_ids))


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
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Samples:
    """Completions of `prompt_ids` through `model.generate`, in the prompts' order;
    temperature 0 means greedy. `config` is any SamplingConfig, e.g. a scenario's
    `generation` section.

    Prompts of similar length go together in left-padded batches of at most
    `batch_tokens` tokens (`resources.batch_tokens`), counting each row as its batch's
    longest prompt + `max_new_tokens`. A batch stops when every row has produced EOS;
    each completion is cut after its EOS. The KV cache is always on: a checkpoint trained
    with gradient checkpointing says `use_cache: false` in its config, and without
    a cache every new token re-runs the whole sequence (quadratic in its length).

    Seeded by `seed` (a scenario's `seed`): batch k samples under the k-th number drawn
    from a generator seeded with it, so a batch's randomness depends on neither the clock
    nor what the other batches produced; the same prompts, seed and budget give the same
    samples."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    sampling = {"do_sample": False}
    if config.temperature > 0:
        sampling = {
            "do_sample": True,
            "temperature": config.temperature,
            "top_k": config.top_k,
            "top_p": config.top_p,
        }
    batches = token_batches([len(p) + config.max_new_tokens for p in prompt_ids], batch_tokens)
    seeds = torch.Generator().manual_seed(seed)
    generated: list[list[list[int]]] = []
    seconds = 0.0
    for picked in batches:
        chunk = [prompt_ids[i] for i in picked]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=seeds)))
        start = time.perf_counter()
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            max_new_tokens=config.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            use_cache=True,
            **sampling,
        )
        rows = out[:, width:].tolist()  # on the host: the device has finished
        seconds += time.perf_counter() - start
        completions = []
        for row in rows:
            if eos in row:
                row = row[: row.index(eos) + 1]
            completions.append(row)
        generated.append(completions)
    completions = in_original_order(batches, generated)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return Samples(
        prompt_ids=list(prompt_ids),
        completion_ids=completions,
        texts=[t.strip() for t in texts],
        generate_seconds=seconds,
    )
