"""Per-sequence log-probabilities of completions under a causal LM (no Ray, no loss maths).

A DAA loss consumes one number per sequence: log π(y|x) = Σ_i log π(y_i | x, y_<i), either
summed or divided by |y| (the paper's Section 2.1 normalisation). Both reductions derive
from the pair (sum, token count), which is also what the reference cache stores.

Why the chunked head is written here: TRL's `selective_log_softmax` starts from logits
that already exist (at 4096 tokens x 128,256 entries, 2.1 GB per sequence in float32),
and liger-kernel's fused linear losses are Triton (GPU-only) kernels that fuse one
specific loss; raydaa needs the per-sequence (sum, count) for eight losses, the reference
cache and KL, on CPUs too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
# Logits computed at once (tokens x vocabulary) by `model_sequence_logps`: 2^25 float32
# logits are 128 MiB, i.e. 261 tokens per chunk at Llama-3's 128,256-token vocabulary,
# against 4.2 GB for one pair's full (2, 4096, 128256) float32 logits.
DEFAULT_CHUNK_ELEMENTS = 1 << 25
# Config keys of models that change the logits after the LM head (Gemma-2's soft-capping,
# Cohere's and Granite's scaling): their log-probs must come from the model's own logits.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


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


def model_sequence_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> SequenceLogps:
    """Per-sequence completion log-probs of a causal LM (an HF model or a DeepSpeed engine
    around one) without ever holding its (B, T, V) logits: the one scoring function of
    training, the reference cache, KL and any other scoring.

    The model runs with its LM head fed only the last position; the final hidden states
    then go through the head a chunk of `chunk_elements // V` scored tokens at a time
    (positions whose label is ignored never reach the head), each chunk's log-softmax in
    float32. Under autograd each chunk is checkpointed: backward recomputes its logits
    instead of keeping them, so training holds one chunk of logits too. Models whose
    forward changes the logits after the head (soft-capping, scaling), or that have no
    output embedding module, are scored from their full logits (`sequence_logps`).
    """
    if labels.shape != input_ids.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} disagree")
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
        "use_cache": False,
    }
    hf = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    config = getattr(hf, "config", None)
    if head is None or any(getattr(config, key, None) for key in _LOGIT_POSTPROCESSING):
        return sequence_logps(model(**inputs).logits, labels)
    captured: list[torch.Tensor] = []

    def last_position_only(_module, args):
        # HF causal LMs call `lm_head(hidden_states)`: keep the hidden states, let the head
        # compute one position's logits in the forward (a module hook, so ZeRO-3's own
        # hooks still gather the head's weights, and any HF causal LM works unchanged)
        captured.append(args[0])
        return (args[0][:, -1:],)

    handle = head.register_forward_pre_hook(last_position_only)
    try:
        model(**inputs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"{type(hf).__name__}: its forward called the output embedding {len(captured)} "
            "times (expected once with the final hidden states); chunked log-probs need "
            "`lm_head(hidden_states)`"
        )
    vocab = getattr(head, "out_features", None) or config.vocab_size
    return hidden_sequence_logps(captured[0], labels, head, vocab, chunk_elements=chunk_elements)


def hidden_sequence_logps(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: torch.nn.Module,
    vocab_size: int,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ignore_index: int = IGNORE_INDEX,
) -> SequenceLogps:
    """`sequence_logps(head(hidden), labels)` one chunk of scored tokens at a time.

    hidden: (B, T, H) final hidden states; labels: (B, T) as in `sequence_logps`. Peak
    extra memory is one chunk's logits (`chunk_elements` float32 values, a few copies
    inside log-softmax), independent of B, T and, beyond one chunk, V.
    """
    labels = labels[:, 1:]  # position t predicts token t+1
    mask = labels != ignore_index
    rows, cols = mask.nonzero(as_tuple=True)
    scored = hidden[:, :-1][rows, cols]  # (N, H): the positions that predict a label
    targets = labels[rows, cols]  # (N,)
    chunk = max(1, chunk_elements // vocab_size)
    checkpointed = torch.is_grad_enabled() and scored.requires_grad
    pieces = []
    for start in range(0, scored.shape[0], chunk):
        args = (head, scored[start : start + chunk], targets[start : start + chunk])
        pieces.append(
            checkpoint(_token_logps, *args, use_reentrant=False)
            if checkpointed
            else _token_logps(*args)
        )
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    sums = sums.index_add(0, rows, token_logps)
    count = mask.sum(-1).to(torch.float32)
    return SequenceLogps(sum=sums, count=count.clamp(min=1.0))


def _token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(head(hidden))[target] per row, in float32: (n, H) -> (n,)."""
    logits = head(hidden).float()
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


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
    logps = model_sequence_logps(model, input_ids, attention_mask, labels)
    half = batch["chosen_input_ids"].shape[0]
    chosen = SequenceLogps(logps.sum[:half], logps.count[:half])
    rejected = SequenceLogps(logps.sum[half:], logps.count[half:])
    return chosen, rejected
