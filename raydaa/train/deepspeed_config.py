"""DeepSpeed config, lr schedule and model-loading kwargs from `TrainSettings`."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from raydaa.train.settings import TrainSettings


def build_deepspeed_config(settings: TrainSettings) -> dict[str, Any]:
    """The DeepSpeed config dict; `train_batch_size` = micro x accum x workers.

    The schedule is not in here: DeepSpeed's WarmupDecayLR spends its first two steps at
    lr=0 (it enforces >= 2 warmup steps), so a torch LambdaLR is passed to
    `deepspeed.initialize` instead (see `make_lr_scheduler`).
    """
    zero: dict[str, Any] = {"stage": settings.zero_stage}
    if settings.zero_stage == 3:
        # Gather the full weights on save so the final HF export is a real model.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_batch_size": settings.global_batch_size,
        "train_micro_batch_size_per_gpu": settings.micro_batch_size,
        "gradient_accumulation_steps": settings.grad_accum_steps,
        "gradient_clipping": settings.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": settings.lr,
                "betas": list(settings.adam_betas),
                "eps": settings.eps,
                "weight_decay": settings.weight_decay,
                # FusedAdam is CUDA-only; torch's AdamW works on the CPU accelerator too.
                "torch_adam": settings.torch_adam,
            },
        },
        "bf16": {"enabled": settings.bf16},
        "zero_optimization": zero,
        # The loop reports its own metrics; keep DeepSpeed's console quiet.
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, settings.deepspeed_overrides)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr for the optimizer step `step` (0-based).

    Linear warmup to 1 over `warmup_steps`, then linear decay towards 0 at `total_steps`.
    Offsets by one so that no step of the run has lr exactly 0 (the first and the last
    steps both learn).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings) -> LambdaLR:
    """LambdaLR over `lr_factor`; DeepSpeed steps it once per optimizer step and saves its
    state (last_epoch) in checkpoints."""
    return LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, total_steps=settings.total_steps, warmup_steps=settings.warmup_steps
        ),
    )


def model_load_kwargs(settings: TrainSettings) -> dict[str, Any]:
    """Keyword arguments for the model factory, in HF `from_pretrained`/`from_config` form."""
    return {
        "attn_implementation": settings.attn_implementation,
        "dtype": torch.bfloat16 if settings.bf16 else torch.float32,
    }


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
