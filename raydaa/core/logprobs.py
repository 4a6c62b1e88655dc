"""Per-sequence log-probabilities of completions under a causal LM (no Ray, no loss maths).

A DAA loss consumes one number per sequence: log π(y|x) = Σ_i log π(y_i | x, y_<i), either
summed or divided by |y| (the paper's Section 2.1 normalisation). Both reductions derive
from the pair (sum, token count), which is also what the reference cache stores.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

IGNORE_INDEX = -100


class SequenceLogps(NamedTuple):
    """Per-sequence sum of completion-token log-probs and number of completion tokens."""

    sum: torch.Tensor  # (B,)
    count: torch.Tensor  # (B,) float, >= 1 for every valid row

    def reduce(self, normalize: bool) -> torch.Tensor:
        """log π(y|x) summed (normalize=False) or per token (normalize=True, paper §2.1)."""
        return self.sum / self.count if normalize else self.sum


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> SequenceLogps:
    """Sum of log π(label_t | tokens_<t) over the positions whose label is not ignored.

    logits: (B, T, V) from a causal LM over input ids (B, T); labels: (B, T), equal to the
    input ids on completion tokens and `ignore_index` on prompt and padding tokens. The
    logit at position t predicts the token at t+1, hence the shift. Computed in float32
    at least, whatever the model's dtype, since bf16 sums of ~1000 terms lose the margin.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t+1
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != ignore_index
    safe_labels = labels.masked_fill(~mask, 0)
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    # log_softmax gathered at the label = logit - logsumexp, without a (B, T, V) log-prob copy
    token_logps = torch.gather(logits, 2, safe_labels.unsqueeze(2)).squeeze(2)
    token_logps = token_logps - torch.logsumexp(logits, dim=-1)
    token_logps = token_logps * mask
    count = mask.sum(-1).to(token_logps.dtype)
    return SequenceLogps(sum=token_logps.sum(-1), count=count.clamp(min=1.0))


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding, so left- and right-padded rows score alike."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_to(t: torch.Tensor, length: int, value: int) -> torch.Tensor:
    """Right-pad a (B, T) tensor to (B, length)."""
    if t.shape[1] >= length:
        return t
    pad = t.new_full((t.shape[0], length - t.shape[1]), value)
    return torch.cat([t, pad], dim=1)


def concatenated_forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_token_id: int = 0
) -> tuple[SequenceLogps, SequenceLogps]:
    """One forward pass over chosen and rejected sequences stacked along the batch.

    batch holds `{chosen,rejected}_{input_ids,attention_mask,labels}`, each (B, T_c) or
    (B, T_r). They are padded to a common length and run as a (2B, T) batch: one pass
    instead of two halves the kernel launches and, under ZeRO-3, the parameter gathers.
    Returns (chosen, rejected) SequenceLogps, each of shape (B,).
    """
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def stacked(key: str, value: int) -> torch.Tensor:
        return torch.cat(
            [
                pad_to(batch[f"chosen_{key}"], length, value),
                pad_to(batch[f"rejected_{key}"], length, value),
            ]
        )

    input_ids = stacked("input_ids", pad_token_id)
    attention_mask = stacked("attention_mask", 0)
    labels = stacked("labels", IGNORE_INDEX)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits
    logps = sequence_logps(logits, labels)
    half = batch["chosen_input_ids"].shape[0]
    chosen = SequenceLogps(logps.sum[:half], logps.count[:half])
    rejected = SequenceLogps(logps.sum[half:], logps.count[half:])
    return chosen, rejected
