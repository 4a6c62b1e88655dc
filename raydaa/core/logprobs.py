"""Per-sequence log-probabilities of completions under a causal LM (no Ray, no loss maths).

A DAA loss consumes one number per sequence: log π(y|x) = Σ_i log π(y_i | x, y_<i), either
summed or divided by |y| (the paper's Section 2.1 normalisation). Both reductions derive
from the pair (sum, token count), which is also what the reference cache stores.

Why the chunked head is written here: TRL's `selective_log_softmax` starts from logits
that already exist (at 4096 tokens x 128,256 entries, 2.1 GB per sequence in float32),
and liger-kernel's fused linear losses are Triton (GPU-only) kernels that fuse one
specific loss; raydaa needs the per-sequence (sum, count) for eight losses, the reference
cache and KL, on CPUs too. Its backward is hand-written (`_LinearHeadLogps`) because
autograd's log-softmax keeps ~4 chunk-sized float32 buffers per chunk where one suffices
(benchmarks/RESULTS.md, "Log-probs without the (B, T, V) logits").
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
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
    float32. Under autograd backward recomputes each chunk's logits instead of keeping
    them (`hidden_sequence_logps`), so training holds one chunk of logits too. Models whose
    forward changes the logits after the head (soft-capping, scaling), or that have no
    output embedding module, are scored from their full logits (`sequence_logps`).
    """
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} disagree"
        )
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

    # prepend: capture the hidden states before ZeRO-3's own pre-hook wraps the head's
    # input for the head's backward hooks; those would fire on the gradient of the
    # captured states, which reach the head outside its module (`_LinearHeadLogps`)
    handle = head.register_forward_pre_hook(last_position_only, prepend=True)
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
    extra memory is about one chunk's logits (`chunk_elements` float32 values; 1.5 of them
    for bf16/fp16 heads), independent of B, T and, beyond one chunk, V. A plain
    `nn.Linear` head (tied or not, with or without bias, ZeRO-3-partitioned or not) goes
    through `_LinearHeadLogps`, whose backward also holds one chunk and adds the head's
    weight gradient over all chunks in float32; any other head module is called per chunk,
    checkpointed under autograd (a few chunk-sized buffers in its backward).
    """
    labels = labels[:, 1:]  # position t predicts token t+1
    mask = labels != ignore_index
    rows, cols = mask.nonzero(as_tuple=True)
    scored = hidden[:, :-1][rows, cols]  # (N, H): the positions that predict a label
    targets = labels[rows, cols]  # (N,)
    chunk = max(1, chunk_elements // vocab_size)
    if _plain_linear(head) and not torch.is_autocast_enabled(hidden.device.type):
        params = [p for p in (head.weight, head.bias) if p is not None]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (scored, *params))
        # Every rank calls this, with or without scored tokens: under ZeRO-3 the gathers
        # inside are collectives, one per call each way, whatever the number of chunks.
        with _zero3_gathered(head.weight, head.bias):
            if grad:
                token_logps = _LinearHeadLogps.apply(scored, targets, head.weight, head.bias, chunk)
            else:
                with torch.no_grad():
                    token_logps = _head_logps_no_grad(
                        scored, targets, head.weight, head.bias, chunk
                    )
        token_logps = token_logps.float()
    else:
        token_logps = _module_head_logps(head, scored, targets, chunk)
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    sums = sums.index_add(0, rows, token_logps)
    count = mask.sum(-1).to(torch.float32)
    return SequenceLogps(sum=sums, count=count.clamp(min=1.0))


def _plain_linear(head: torch.nn.Module) -> bool:
    """Whether `head(x)` is exactly `F.linear(x, head.weight, head.bias)`: an nn.Linear
    whose forward nobody replaced (PEFT/LoRA wrappers, quantised layers and accelerate's
    hooked forwards are not, and go through the module itself)."""
    return (
        isinstance(head, torch.nn.Linear)
        and type(head).forward is torch.nn.Linear.forward
        and "forward" not in vars(head)
    )


def _zero3_partitioned(*params: torch.Tensor | None) -> list[torch.Tensor]:
    """The DeepSpeed ZeRO-3 parameters among `params` whose data is partitioned away."""
    return [
        p
        for p in params
        if p is not None and getattr(getattr(p, "ds_status", None), "name", None) == "NOT_AVAILABLE"
    ]


@contextmanager
def _zero3_gathered(*params: torch.Tensor | None):
    """DeepSpeed ZeRO-3 partitions parameters (`ds_id`, `ds_status`; `.data` empty) and
    gathers them only in the hooks of their modules' forward and backward. The head's
    weight is read here outside its module, so gather what is partitioned and partition
    it again on exit (DeepSpeed's own `LinearFunctionForZeroStage3` does the same). A
    no-op for ordinary tensors and for ZeRO-3 parameters already gathered."""
    partitioned = _zero3_partitioned(*params)
    if partitioned:
        partitioned[0].all_gather(param_list=partitioned)
    try:
        yield
    finally:
        if partitioned:
            partitioned[0].partition(param_list=partitioned)


def _partition_after_grad_accumulation(param: torch.Tensor) -> None:
    """Partition a gathered ZeRO-3 parameter once autograd has accumulated the gradient
    this backward returns for it: AccumulateGrad lays the gradient out like the
    parameter's data, so it must still be whole then (as it is after a module's own
    backward). Post-accumulate hooks run in registration order: DeepSpeed's gradient
    reduction first, then this. A tied weight may be in use by its other module by then
    (the input embedding's backward): DeepSpeed releases it after that module."""

    def hook(p):
        handle.remove()
        if not getattr(p, "ds_active_sub_modules", None):
            p.partition(param_list=[p])

    handle = param.register_post_accumulate_grad_hook(hook)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The head's logits for one chunk, in float32 at least (the head's own dtype first, as
    `head(hidden).float()` computes them)."""
    logits = F.linear(hidden, weight, bias)
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _chunk_logps_and_lse(
    hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log softmax(logits)[target], logsumexp(logits)) per row, (n,) each, with the chunk's
    logits as the only chunk-sized buffer (no grad). Same arithmetic as torch.logsumexp:
    max, exp(x - max) summed, log, + max, with infinite maxima replaced by 0."""
    x = _chunk_logits(hidden, weight, bias)
    picked = x.gather(1, targets.unsqueeze(1)).squeeze(1)
    top = x.amax(1, keepdim=True)
    top.masked_fill_(top.isinf(), 0.0)
    lse = x.sub_(top).exp_().sum(1).log_().add_(top.squeeze(1))
    return picked - lse, lse


def _head_logps_no_grad(hidden, targets, weight, bias, chunk: int) -> torch.Tensor:
    """Scoring (no autograd): per-token log-probs, one chunk buffer at a time."""
    out = []
    for start in range(0, hidden.shape[0], chunk):
        end = start + chunk
        out.append(_chunk_logps_and_lse(hidden[start:end], targets[start:end], weight, bias)[0])
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


class _LinearHeadLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[targets] per row, (N, H) -> (N,), chunk by chunk.

    Forward keeps only the hidden states, targets and each row's logsumexp. Backward
    recomputes one chunk's float32 logits at a time and turns them in place into the
    logits' gradient g * (onehot(target) - softmax), then two matmuls. One Function for all
    chunks (not one per chunk) so that the weight gradient is summed over the chunks in
    float32 and rounded to the head's dtype once, as the full-logits path's single matmul
    does, and so that a ZeRO-3 head is gathered once per backward. That float32 sum is
    V x H float32 values (31 MiB at V=128,256, H=64; 2 GiB at H=4096) for bf16/fp16
    heads; for float32 heads it is the returned gradient itself.
    """

    @staticmethod
    def forward(ctx, hidden, targets, weight, bias, chunk):
        out, lses = [], []
        for start in range(0, hidden.shape[0], chunk):
            end = start + chunk
            logps, lse = _chunk_logps_and_lse(hidden[start:end], targets[start:end], weight, bias)
            out.append(logps)
            lses.append(lse)
        acc = torch.promote_types(hidden.dtype, torch.float32)
        token_logps = torch.cat(out) if out else hidden.new_zeros(0, dtype=acc)
        lse = torch.cat(lses) if lses else hidden.new_zeros(0, dtype=acc)
        ctx.chunk = chunk
        ctx.save_for_backward(hidden, targets, lse, weight, bias)
        return token_logps

    @staticmethod
    def backward(ctx, grad_out):
        hidden, targets, lse, weight, bias = ctx.saved_tensors
        need_hidden, _, need_weight, need_bias, _ = ctx.needs_input_grad
        need_bias = need_bias and bias is not None
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_out = grad_out.to(acc)
        # the weight's shape too is only there once gathered (ZeRO-3)
        partitioned = _zero3_partitioned(weight, bias)
        if partitioned:  # ZeRO-3: see _zero3_gathered and the end of this function
            partitioned[0].all_gather(param_list=partitioned)
        with torch.no_grad():
            grad_hidden = torch.empty_like(hidden) if need_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=acc) if need_weight else None
            grad_bias = torch.zeros_like(bias, dtype=acc) if need_bias else None
            for start in range(0, hidden.shape[0], ctx.chunk):
                end = start + ctx.chunk
                h, g = hidden[start:end], grad_out[start:end].unsqueeze(1)
                # d(g * (x[target] - logsumexp(x)))/dx = g * onehot(target) - g * softmax(x)
                x = _chunk_logits(h, weight, bias)
                x.sub_(lse[start:end].unsqueeze(1)).exp_().mul_(-g)
                x.scatter_add_(1, targets[start:end].unsqueeze(1), g)
                if need_weight:
                    grad_weight.addmm_(x.t(), h.to(acc))
                if need_bias:
                    grad_bias.add_(x.sum(0))
                if need_hidden:
                    # in the head's dtype, as the full path's linear backward computes it
                    torch.mm(x.to(weight.dtype), weight, out=grad_hidden[start:end])
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        for param, grad in ((weight, grad_weight), (bias, grad_bias)):
            if any(param is p for p in partitioned):
                if grad is None:
                    param.partition(param_list=[param])
                else:
                    _partition_after_grad_accumulation(param)
        return grad_hidden, None, grad_weight, grad_bias, None


def _module_head_logps(head: torch.nn.Module, hidden, targets, chunk: int) -> torch.Tensor:
    """Any other head: called as a module per chunk (its hooks run), checkpointed under
    autograd so that backward recomputes each chunk's logits instead of keeping them."""
    checkpointed = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    )
    pieces = []
    for start in range(0, hidden.shape[0], chunk):
        args = (head, hidden[start : start + chunk], targets[start : start + chunk])
        pieces.append(
            checkpoint(_token_logps, *args, use_reentrant=False)
            if checkpointed
            else _token_logps(*args)
        )
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def _token_logps(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
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
