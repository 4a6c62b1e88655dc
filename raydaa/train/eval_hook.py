"""A caller's evaluation inside the training loop: `eval_fn(engine, step)` runs on every
rank with the model's full weights in place, its randomness walled off from training's,
and rank 0's metrics handed to every rank.

The contract with `eval_fn` (raydaa.evaluate.intermediate.IntermediateEvaluation is one):
called on every rank at the same step; rank 0 computes with `engine.module` and returns
{name: number}; the other ranks return {} at once and wait for rank 0's metrics. It may
have a `describe(metrics) -> str` method: the line the driver's progress prints.

ZeRO-3: every rank gathers the full parameters (DeepSpeed's own
`unwrap_model_for_generation`: `GatheredParameters` over all of them, the ZeRO-3 forward
hooks removed for the duration and put back after), so rank 0 runs plain forwards and
`generate` alone, with no collective inside. The alternative, every rank sampling a share
of the prompts through the partitioned model, would need `generate(synced_gpus=True)`,
gathering every layer at every new token, and the KL and judge results merged across
ranks; the subset is small, so one rank with whole weights is simpler and faster. The
cost is the full model's weights on each rank while the evaluation runs (an 8B model in
bf16: 16 GB per GPU), released when it ends.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def full_weights(engine: Any, zero_stage: int) -> Iterator[None]:
    """Inside, `engine.module` holds every parameter whole on this rank (only ZeRO-3
    partitions them); a collective: every rank must enter together."""
    if zero_stage != 3:
        yield
        return
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    with unwrap_model_for_generation(engine):
        yield


def run_eval(engine: Any, eval_fn: Callable[[Any, int], dict], step: int, *, rank: int,
             world: int, zero_stage: int) -> dict[str, Any]:
    """`eval_fn(engine, step)` on this rank, then rank 0's metrics on every rank. An
    evaluation that raises does not stop training: its traceback goes to rank 0's log and
    the metrics are {"eval_error": reason}. The RNG state (CPU and this rank's GPU) and
    the module's train/eval mode are as they were before, so a run's training does not
    depend on whether it is evaluated."""
    module = engine.module
    was_training = module.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    metrics: dict[str, Any] = {}
    try:
        with torch.random.fork_rng(devices=devices), full_weights(engine, zero_stage):
            try:  # inside: the weights are partitioned again whatever happens
                metrics = dict(eval_fn(engine, step) or {})
            except Exception as err:  # noqa: BLE001 - one failed evaluation, not the run
                traceback.print_exc()
                metrics = {"eval_error": f"{type(err).__name__}: {err}"}
    finally:
        module.train(was_training)
    return from_rank0(metrics, rank=rank, world=world)


def from_rank0(metrics: dict[str, Any], *, rank: int, world: int) -> dict[str, Any]:
    """Rank 0's dict on every rank (a broadcast: every rank must call it)."""
    if world == 1:
        return metrics
    box = [metrics if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def describe(eval_fn: Any, metrics: dict[str, Any]) -> str:
    """The progress line of an evaluation's metrics: `eval_fn.describe` when it has one."""
    if "eval_error" in metrics:
        return f"evaluation failed: {metrics['eval_error']}"
    text = getattr(eval_fn, "describe", None)
    return text(metrics) if text else ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                 if isinstance(v, int | float))

