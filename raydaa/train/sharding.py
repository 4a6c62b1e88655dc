"""Deterministic data order: which examples each worker sees at each micro step.

Each epoch is a seeded permutation of the dataset, cut into global batches (the tail that
does not fill one is dropped). Global batch t of the epoch is split into one contiguous
chunk per rank, and each chunk into micro batches. So the *set* of examples in every
optimizer step depends only on (seed, global batch size), never on how it is split over
workers and accumulation steps: 2 workers x micro 2 and 1 worker x micro 2 x accum 2 see
the same global batches. The position is a pure function of the step, so resuming needs
only the step number.
"""

from __future__ import annotations

import torch


class BatchPlan:
    """Example indices for (step, micro_step) on one rank.

    Args:
        num_examples: dataset length N.
        global_batch_size: G, examples per optimizer step over all ranks.
        micro_batch_size: m, examples per micro batch on one rank.
        world_size: W ranks; G must be a multiple of m * W.
        rank: this worker's rank in [0, W).
        seed: epoch e uses permutation randperm(N, seed + e).
    """

    def __init__(self, num_examples: int, *, global_batch_size: int, micro_batch_size: int,
                 world_size: int, rank: int, seed: int) -> None:
        if global_batch_size % (micro_batch_size * world_size):
            raise ValueError("global_batch_size must be a multiple of micro_batch_size*world_size")
        if num_examples < global_batch_size:
            raise ValueError(
                f"dataset has {num_examples} examples, fewer than one global batch "
                f"({global_batch_size})"
            )
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.per_rank = global_batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.num_examples = num_examples
        self.steps_per_epoch = num_examples // global_batch_size
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        # One randperm per epoch, cached: cheap even for 10^5-10^6 examples.
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        return self._perm

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int, micro_step: int) -> list[int]:
        """Indices (length m) for 0-based optimizer `step` and accumulation `micro_step`."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        start = (step_in_epoch * self.global_batch_size + self.rank * self.per_rank
                 + micro_step * self.micro_batch_size)
        return self._permutation(epoch)[start:start + self.micro_batch_size].tolist()
