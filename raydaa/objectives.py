"""Training objectives: what the generic DeepSpeed loop calls as `loss_fn(engine, batch)`.

They join a model forward (logprobs) to a loss (losses) through the method's spec: no
objective names a method, and no loss formula lives here. Objectives are small picklable
dataclasses, shipped to Ray Train workers inside the train-loop config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raydaa.logprobs import (
    SequenceLogps,
    concatenated_forward,
    position_ids_from_mask,
    sequence_logps,
)
from raydaa.losses import NormalizationPolicy, get_spec, preference_loss, uses_length_normalization
from raydaa.refcache import ReferenceLogps


@dataclass
class SFTObjective:
    """Stage 1: mean token negative log-likelihood of the completions (paper §2.2)."""

    def __call__(
        self, model, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
            use_cache=False,
        ).logits
        logps = sequence_logps(logits, batch["labels"])
        loss = -logps.sum.sum() / logps.count.sum()  # per token, so long answers weigh more
        return loss, {"nll_per_token": loss.item()}


@dataclass
class PreferenceObjective:
    """Stage 2: one DAA loss with one configuration (paper §2.3-3.1).

    Reference log-probs come from the shared cache (`refcache`), looked up by each row's
    index: a trial never holds or runs the reference model.
    """

    method: str
    beta: float
    lambda_: float = 1.0
    sft_weight: float = 0.0
    gamma_beta_ratio: float = 0.5
    normalization: NormalizationPolicy = "paper"
    reference_cache: str | None = None
    """URI of the reference cache (required when the method needs a reference)."""
    pad_token_id: int = 0
    _reference: ReferenceLogps | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        spec = get_spec(self.method)
        if spec.needs_reference and not self.reference_cache:
            raise ValueError(f"{self.method} needs a reference log-prob cache (reference_cache)")
        self.normalize = uses_length_normalization(self.method, self.normalization)

    def reference_logps(self, index: torch.Tensor) -> tuple[SequenceLogps, SequenceLogps]:
        if self._reference is None:  # loaded once per worker, on first use
            self._reference = ReferenceLogps.load(self.reference_cache)
        return self._reference.lookup(index.cpu())

    def __call__(
        self, model, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = concatenated_forward(model, batch, self.pad_token_id)
        pi_w, pi_l = chosen.reduce(self.normalize), rejected.reduce(self.normalize)
        ref_w = ref_l = None
        if get_spec(self.method).needs_reference:
            ref_c, ref_r = self.reference_logps(batch["index"])
            ref_w = ref_c.reduce(self.normalize).to(pi_w.device, pi_w.dtype)
            ref_l = ref_r.reduce(self.normalize).to(pi_l.device, pi_l.dtype)
        out = preference_loss(
            self.method,
            pi_w,
            pi_l,
            ref_w,
            ref_l,
            beta=self.beta,
            lambda_=self.lambda_,
            sft_weight=self.sft_weight,
            gamma_beta_ratio=self.gamma_beta_ratio,
        )
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
