"""Per-step statistics: accumulate over micro batches, average over workers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from raydaa.io.memory import peak_rss_mib


def count_tokens(batch: Mapping[str, Any]) -> int:
    """Default token count of a batch: the ones in every `*attention_mask` tensor (real,
    non-pad tokens, e.g. chosen + rejected), else the size of every `*input_ids` tensor."""
    masks = [v for k, v in batch.items() if k.endswith("attention_mask") and torch.is_tensor(v)]
    if masks:
        return int(sum(int(m.sum()) for m in masks))
    ids = [v for k, v in batch.items() if k.endswith("input_ids") and torch.is_tensor(v)]
    return int(sum(v.numel() for v in ids))


class StepStats:
    """Sums of the loss and the loss_fn's metrics over one step's micro batches; kept as
    0-dim tensors on the compute device so there is no host sync per micro batch."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.metrics: dict[str, torch.Tensor | float] = {}
        self.micro_batches = 0
        self.tokens = 0

    def add(self, loss: torch.Tensor, metrics: Mapping[str, Any], tokens: int) -> None:
        self.loss = self.loss + loss.detach().double()
        for key, value in metrics.items():
            value = value.detach().double() if torch.is_tensor(value) else float(value)
            self.metrics[key] = self.metrics.get(key, 0.0) + value
        self.micro_batches += 1
        self.tokens += tokens

    def reduce(self, device: torch.device) -> tuple[float, dict[str, float], int]:
        """(mean loss, mean metrics, total tokens) over micro batches and all workers.

        Collective: every rank calls it with the same metric keys (the loss_fn's contract).
        One all-reduce of a vector [loss, *metrics (sorted keys), tokens], shape (K + 2,),
        float64 so token counts stay exact.
        """
        keys = sorted(self.metrics)
        n = max(1, self.micro_batches)
        sums = [self.loss] + [self.metrics[k] for k in keys]
        vec = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device) / n for v in sums]
                          + [torch.tensor(float(self.tokens), dtype=torch.float64, device=device)])
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            if world > 1:
                dist.all_reduce(vec, op=dist.ReduceOp.SUM)
        vec = vec.cpu()
        means = (vec[:-1] / world).tolist()
        return means[0], dict(zip(keys, means[1:], strict=True)), int(vec[-1])


def is_finite(value: float | None) -> bool:
    """True for a finite number; None (no grad norm computed) counts as finite."""
    return value is None or math.isfinite(value)


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """This worker's peak resident memory since it started (`peak_rss_mib`) and, on a GPU,
    torch's peak allocation (`peak_gpu_mib`), each the max over all workers (collective:
    every rank calls it at the same report)."""
    values = [peak_rss_mib()]
    on_gpu = device.type == "cuda"
    if on_gpu:
        values.append(torch.cuda.max_memory_allocated(device) / 2**20)
    vec = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(vec, op=dist.ReduceOp.MAX)
    out = vec.cpu().tolist()
    return {"peak_rss_mib": round(out[0], 1)} | ({"peak_gpu_mib": round(out[1], 1)} if on_gpu else {})
