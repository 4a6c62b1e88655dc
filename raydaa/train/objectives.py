"""Training objectives: what the generic DeepSpeed loop calls as `loss_fn(engine, batch)`.

They join a model forward (logprobs) to a loss (losses) through the method's spec: no
objective names a method, and no loss formula lives here. Objectives are small picklable
dataclasses, shipped to Ray Train workers inside the train-loop config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raydaa.core.logprobs import SequenceLogps, concatenated_forward, model_sequence_logps
from raydaa.core.losses import LossConfig, preference_loss
from raydaa.train.refcache import ReferenceLogps


@dataclass
class SFTObjective:
    """Stage 1: mean token negative log-likelihood of the completions (paper §2.2)."""

    def __call__(
        self, model, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logps = model_sequence_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        loss = -logps.sum.sum() / logps.count.sum()  # per token, so long answers weigh more
        return loss, {"nll_per_token": loss.item()}


@dataclass
class PreferenceObjective:
    """Stage 2: one DAA loss with one configuration (paper §2.3-3.1).

    Reference log-probs come from the shared cache (`refcache`), looked up by each row's
    index: a trial never holds or runs the reference model.
    """

    loss: LossConfig
    reference_cache: str | None = None
    """URI of the reference cache (required when the method needs a reference)."""
    pad_token_id: int = 0
    _reference: ReferenceLogps | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.loss.spec.needs_reference and not self.reference_cache:
            raise ValueError(f"{self.loss.method} needs a reference log-prob cache (reference_cache)")

    def reference_logps(self, index: torch.Tensor) -> tuple[SequenceLogps, SequenceLogps]:
        if self._reference is None:  # loaded once per worker, on first use
            self._reference = ReferenceLogps.load(self.reference_cache)
        return self._reference.lookup(index.cpu())

    def __call__(
        self, model, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = concatenated_forward(model, batch, self.pad_token_id)
        normalize = self.loss.normalize
        pi_w, pi_l = chosen.reduce(normalize), rejected.reduce(normalize)
        ref_w = ref_l = None
        if self.loss.spec.needs_reference:
            ref_c, ref_r = self.reference_logps(batch["index"])
            ref_w = ref_c.reduce(normalize).to(pi_w.device, pi_w.dtype)
            ref_l = ref_r.reduce(normalize).to(pi_l.device, pi_l.dtype)
        out = preference_loss(self.loss, pi_w, pi_l, ref_w, ref_l)
        margin = out.chosen_rewards - out.rejected_rewards
        metrics = {
            "rewards/chosen": out.chosen_rewards.mean().item(),
            "rewards/rejected": out.rejected_rewards.mean().item(),
            "rewards/margin": margin.mean().item(),
            "rewards/accuracy": (margin > 0).float().mean().item(),
            "logps/chosen": pi_w.detach().mean().item(),
            "logps/rejected": pi_l.detach().mean().item(),
        }
        return out.losses.mean(), metrics
