"""Per-sequence log-probs against a direct loop over tokens."""

import math
from enum import Enum

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from raydaa.core.logprobs import IGNORE_INDEX, concatenated_forward, sequence_logps
from raydaa.study.theory import build_tiny_llama


def loop_logps(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, int]]:
    """The definition, one token at a time: Σ_t log softmax(logits[t-1])[labels[t]]."""
    out = []
    for b in range(labels.shape[0]):
        total, count = 0.0, 0
        for pos in range(1, labels.shape[1]):
            token = int(labels[b, pos])
            if token == IGNORE_INDEX:
                continue
            probs = torch.softmax(logits[b, pos - 1].double(), dim=-1)
            total += math.log(float(probs[token]))
            count += 1
        out.append((total, count))
    return out


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sequence_logps_match_token_loop(padding_side):
    """Random logits, prompts of 2-4 tokens masked out, completions of 1-6 tokens, padding
    on the given side: sum and mean reductions equal the loop."""
    g = torch.Generator().manual_seed(0)
    vocab, rows = 11, []
    for prompt_len, completion_len in [(2, 1), (4, 6), (3, 3), (2, 5)]:
        ids = torch.randint(0, vocab, (prompt_len + completion_len,), generator=g)
        rows.append(torch.cat([torch.full((prompt_len,), IGNORE_INDEX), ids[prompt_len:]]))
    width = max(len(r) for r in rows) + 2
    pad = lambda r: torch.full((width - len(r),), IGNORE_INDEX)  # noqa: E731
    labels = torch.stack(
        [
            torch.cat([r, pad(r)]) if padding_side == "right" else torch.cat([pad(r), r])
            for r in rows
        ]
    )
    logits = torch.randn(len(rows), width, vocab, generator=g) * 3

    got = sequence_logps(logits, labels)
    expected = loop_logps(logits, labels)
    torch.testing.assert_close(
        got.sum, torch.tensor([s for s, _ in expected], dtype=torch.float32), rtol=1e-5, atol=1e-5
    )
    assert got.count.tolist() == [c for _, c in expected] == [1, 6, 3, 5]
    torch.testing.assert_close(
        got.reduce(normalize=True),
        torch.tensor([s / c for s, c in expected], dtype=torch.float32),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bf16_logits_are_reduced_in_float32():
    logits = torch.randn(2, 7, 5).to(torch.bfloat16)
    labels = torch.randint(0, 5, (2, 7))
    out = sequence_logps(logits, labels)
    assert out.sum.dtype == torch.float32
    expected = loop_logps(logits.float(), labels)
    torch.testing.assert_close(
        out.sum, torch.tensor([s for s, _ in expected], dtype=torch.float32), rtol=1e-4, atol=1e-4
    )


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="disagree"):
        sequence_logps(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))


def pad_rows(rows, side: str, value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = []
    for r in rows:
        fill = torch.full((width - len(r),), value, dtype=r.dtype)
        padded.append(torch.cat([r, fill]) if side == "right" else torch.cat([fill, r]))
    return torch.stack(padded)


def pair_batch(side: str) -> dict[str, torch.Tensor]:
    """Two pairs with chosen/rejected of different lengths, padded on `side`."""
    prompts = [torch.tensor([5, 6, 7]), torch.tensor([9, 3])]
    completions = {
        "chosen": [torch.tensor([8, 9]), torch.tensor([4, 4, 4, 1])],
        "rejected": [torch.tensor([3, 2, 1, 30, 7]), torch.tensor([2])],
    }
    batch = {}
    for key, comps in completions.items():
        ids = [torch.cat([p, c]) for p, c in zip(prompts, comps, strict=True)]
        labels = [
            torch.cat([torch.full_like(p, IGNORE_INDEX), c])
            for p, c in zip(prompts, comps, strict=True)
        ]
        batch[f"{key}_input_ids"] = pad_rows(ids, side, 0)
        batch[f"{key}_attention_mask"] = pad_rows([torch.ones_like(i) for i in ids], side, 0)
        batch[f"{key}_labels"] = pad_rows(labels, side, IGNORE_INDEX)
    return batch, prompts, completions


def test_concatenated_forward_matches_unpadded_single_sequences():
    """The (2B, T) padded forward equals running each sequence alone without padding, for
    right and left padding (position ids follow the attention mask)."""
    model = build_tiny_llama(seed=0)
    for side in ("right", "left"):
        batch, prompts, completions = pair_batch(side)
        with torch.no_grad():
            chosen, rejected = concatenated_forward(model, batch)
        for key, got in (("chosen", chosen), ("rejected", rejected)):
            for i, (p, c) in enumerate(zip(prompts, completions[key], strict=True)):
                ids = torch.cat([p, c])[None]
                labels = torch.cat([torch.full_like(p, IGNORE_INDEX), c])[None]
                with torch.no_grad():
                    alone = sequence_logps(model(input_ids=ids).logits, labels)
                # float32 rounding only: the LM head runs over the batch's scored tokens
                # at once (a matmul of another shape) where the loop scores one row
                assert got.sum[i].item() == pytest.approx(alone.sum.item(), rel=1e-6), (
                    side,
                    key,
                    i,
                )
                assert got.count[i].item() == len(c)


# ----------------------------------------------- chunked log-probs from the hidden states


def small_lm(vocab: int = 300, tie: bool = True, arch: str = "llama"):
    """A random-init causal LM whose vocabulary is large next to its width, like Llama 3."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    if arch == "gemma2":  # soft-caps its logits after the head (final_logit_softcapping)
        return Gemma2ForCausalLM(Gemma2Config(**common, head_dim=8, final_logit_softcapping=0.05))
    return LlamaForCausalLM(LlamaConfig(**common))


def scored_batch(vocab: int, side: str = "right"):
    """Three rows of different lengths, prompts masked out of the labels, padded on `side`."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for prompt_len, completion_len in [(5, 9), (12, 3), (2, 20)]:
        ids = torch.randint(0, vocab, (prompt_len + completion_len,), generator=g)
        labels = torch.cat([torch.full((prompt_len,), IGNORE_INDEX), ids[prompt_len:]])
        rows.append((ids, labels))
    ids = pad_rows([r[0] for r in rows], side, 0)
    mask = pad_rows([torch.ones_like(r[0]) for r in rows], side, 0)
    labels = pad_rows([r[1] for r in rows], side, IGNORE_INDEX)
    return ids, mask, labels


def full_logits_logps(model, ids, mask, labels):
    from raydaa.core.logprobs import position_ids_from_mask

    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
    ).logits
    return sequence_logps(logits, labels)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("chunk_tokens", [1, 7, 1000])
def test_chunked_logps_equal_the_full_logits_and_their_gradients(tie, side, chunk_tokens):
    """Values within 1e-5 relative and every parameter's gradient within 1e-5 of its
    largest entry, for chunks of one token, of a few, and of more than the batch."""
    from raydaa.core.logprobs import model_sequence_logps

    vocab = 300
    model = small_lm(vocab, tie)
    ids, mask, labels = scored_batch(vocab, side)
    expected = full_logits_logps(model, ids, mask, labels)
    model.zero_grad()
    expected.sum.sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = model_sequence_logps(model, ids, mask, labels, chunk_elements=chunk_tokens * vocab)
    got.sum.sum().backward()
    torch.testing.assert_close(got.sum, expected.sum.detach(), rtol=1e-5, atol=0)
    assert got.count.tolist() == expected.count.tolist() == [9, 3, 20]
    for (name, p), want in zip(model.named_parameters(), expected_grads, strict=True):
        scale = want.abs().max().item()
        assert (p.grad - want).abs().max().item() <= 1e-5 * scale + 1e-9, name


class _OpShapes(TorchDispatchMode):
    """Records the shape of every tensor an aten op returns (forward and backward), but for
    views of `skip`'s storage (the head's weight and its transpose)."""

    def __init__(self, skip: torch.Tensor):
        super().__init__()
        self.skip = skip.untyped_storage().data_ptr()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() != self.skip:
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("train", [False, True])
def test_chunked_logps_never_hold_the_batch_logits(train):
    """No op, in the forward or (training) the backward, produces more than one chunk of
    logits (tensors whose last dimension is the vocabulary): the model's own head call sees
    one position per row, then at most `chunk_elements // V` scored positions at a time."""
    from raydaa.core.logprobs import model_sequence_logps

    vocab = 300
    model = small_lm(vocab)
    ids, mask, labels = scored_batch(vocab)  # 32 scored tokens in 3 rows of up to 22
    ops = _OpShapes(skip=model.lm_head.weight)
    with torch.set_grad_enabled(train), ops:
        logps = model_sequence_logps(model, ids, mask, labels, chunk_elements=5 * vocab)
        if train:
            logps.sum.sum().backward()
    by_vocab = [s for s in ops.shapes if s and s[-1] == vocab]
    assert (3, 1, vocab) in by_vocab  # the model's own call: last position only
    assert (5, vocab) in by_vocab and (2, vocab) in by_vocab  # 32 scored tokens, 5 at a time
    assert max(math.prod(s) for s in by_vocab) == 5 * vocab, sorted(set(by_vocab))


def test_models_that_change_logits_after_the_head_are_scored_from_their_logits():
    """Gemma-2 soft-caps logits after lm_head: the chunked path would score uncapped logits,
    so such models are scored from their own (B, T, V) logits."""
    from raydaa.core.logprobs import hidden_sequence_logps, model_sequence_logps

    vocab = 300
    model = small_lm(vocab, arch="gemma2")
    ids, mask, labels = scored_batch(vocab)
    with torch.no_grad():
        expected = full_logits_logps(model, ids, mask, labels)
        got = model_sequence_logps(model, ids, mask, labels, chunk_elements=5 * vocab)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        uncapped = hidden_sequence_logps(hidden, labels, model.lm_head, vocab)
    torch.testing.assert_close(got.sum, expected.sum, rtol=1e-5, atol=0)
    assert (uncapped.sum - expected.sum).abs().max() > 0.01  # the cap matters: 1000x the tolerance


def test_bf16_model_log_probs_are_float32_and_near_the_fp32_ones():
    from raydaa.core.logprobs import model_sequence_logps

    vocab = 300
    model = small_lm(vocab)
    ids, mask, labels = scored_batch(vocab)
    with torch.no_grad():
        fp32 = model_sequence_logps(model, ids, mask, labels)
        bf16 = model_sequence_logps(model.to(torch.bfloat16), ids, mask, labels)
    assert bf16.sum.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: per-token log-probs ~-5.7 move by ~1e-2, over 20 tokens
    torch.testing.assert_close(bf16.sum, fp32.sum, rtol=2e-2, atol=0)


def test_training_keeps_no_logits_for_backward():
    """Under autograd each chunk is checkpointed: what the graph keeps for backward holds
    no logits (tensors whose last dimension is the vocabulary), only hidden states."""
    from raydaa.core.logprobs import model_sequence_logps

    vocab = 300
    model = small_lm(vocab)
    model.lm_head.weight.data = model.lm_head.weight.data.clone()  # untie: (V, H) weight
    ids, mask, labels = scored_batch(vocab)
    kept = []

    weight = model.lm_head.weight.untyped_storage().data_ptr()

    def pack(t):
        if t.untyped_storage().data_ptr() != weight:  # the head's weight (or its transpose)
            kept.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model_sequence_logps(model, ids, mask, labels, chunk_elements=5 * vocab).sum.sum()
    assert (32, 32) in kept, "the scored hidden states (32 tokens x 32) are not seen as kept"
    assert [s for s in kept if vocab in s] == []


# ------------------------------------- the hand-written head Function (`_LinearHeadLogps`)


def head_case(vocab=50, width=8, rows=3, length=23, bias=True, dtype=torch.float32, seed=0):
    """Hidden states (requiring grad), an nn.Linear head with logits ~ N(0, 2^2), and labels
    with the first 4 positions of each row ignored."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, length, width, generator=g).to(dtype).requires_grad_(True)
    head = torch.nn.Linear(width, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=g) * (2.0 / math.sqrt(width)))
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=g))
    labels = torch.randint(0, vocab, (rows, length), generator=g)
    labels[:, :4] = IGNORE_INDEX
    return hidden, head.to(dtype), labels


def grads_of(logps, tensors):
    # weighted per row so that every row's gradient has its own scale
    weights = torch.arange(1, logps.sum.shape[0] + 1, dtype=torch.float32)
    return torch.autograd.grad((logps.sum * weights).sum(), tensors)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_tokens", [1, 7, 1000])
def test_head_function_equals_the_full_logits_and_their_gradients(bias, chunk_tokens):
    """hidden_sequence_logps with an nn.Linear head: sums and the gradients of the hidden
    states, the weight and the bias as the full-logits path computes them."""
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab = 50
    hidden, head, labels = head_case(vocab, bias=bias)
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    full = sequence_logps(head(hidden), labels)
    want = grads_of(full, params)
    got = hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=chunk_tokens * vocab)
    assert got.sum.grad_fn is not None
    torch.testing.assert_close(got.sum, full.sum, rtol=1e-6, atol=0)
    for name, a, b in zip(["hidden", "weight", "bias"], grads_of(got, params), want, strict=False):
        assert (a - b).abs().max() <= 1e-6 * b.abs().max(), name


def test_tied_head_weight_gets_the_embedding_and_head_gradients_summed():
    """The head's weight is the input embedding's: its gradient is the sum of both uses, and
    backward adds it into an existing .grad (gradient accumulation)."""
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab, width = 40, 6
    torch.manual_seed(0)
    embed = torch.nn.Embedding(vocab, width)
    head = torch.nn.Linear(width, vocab, bias=False)
    head.weight = embed.weight
    mixer = torch.nn.Linear(width, width)
    ids = torch.randint(0, vocab, (2, 17))
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX

    def run(chunked: bool):
        hidden = torch.tanh(mixer(embed(ids)))
        if chunked:
            return hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=3 * vocab)
        return sequence_logps(head(hidden), labels)

    run(False).sum.sum().backward()
    want = embed.weight.grad.clone()
    embed.weight.grad = None
    run(True).sum.sum().backward()
    assert (embed.weight.grad - want).abs().max() <= 1e-6 * want.abs().max()
    run(True).sum.sum().backward()  # accumulates
    assert (embed.weight.grad - 2 * want).abs().max() <= 2e-6 * want.abs().max()


def test_bf16_head_gradient_is_one_float32_sum_over_the_chunks():
    """bf16 head, 125 chunks: the weight gradient is within 0.3% (Frobenius) of the float32
    computation on the same bf16 inputs (observed 0.23%), no further than the full path's
    one bf16 matmul (0.24%: both round the logits and the gradient to bf16). Adding the
    125 per-chunk gradients in bf16, as the checkpointed path did, is 1.7% off."""
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab = 512
    hidden, head, labels = head_case(vocab, width=32, rows=2, length=1004, bias=False)
    hidden = hidden.detach().to(torch.bfloat16).requires_grad_(True)
    head = head.to(torch.bfloat16)
    ref_hidden = hidden.detach().float().requires_grad_(True)
    ref_head = torch.nn.Linear(32, vocab, bias=False)
    ref_head.weight.data = head.weight.detach().float()
    (want,) = grads_of(sequence_logps(ref_head(ref_hidden), labels), [ref_head.weight])

    def error(grad):
        return ((grad.float() - want).norm() / want.norm()).item()

    chunked = hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=16 * vocab)
    (got,) = grads_of(chunked, [head.weight])
    (full,) = grads_of(sequence_logps(head(hidden), labels), [head.weight])
    assert got.dtype == torch.bfloat16
    assert error(got) <= 3e-3, (error(got), error(full))
    assert error(got) <= 1.1 * error(full), (error(got), error(full))


def test_head_function_passes_gradcheck_in_float64():
    from raydaa.core.logprobs import _LinearHeadLogps

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 7, (5,), generator=g)
    for chunk in (1, 2, 5):
        assert torch.autograd.gradcheck(
            lambda h, w, b, c=chunk: _LinearHeadLogps.apply(h, targets, w, b, c),
            (hidden, weight, bias),
        )


def test_frozen_head_or_frozen_hidden_get_only_the_gradients_needed():
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab = 50
    hidden, head, labels = head_case(vocab)
    full = sequence_logps(head(hidden), labels)
    want_hidden, want_weight = torch.autograd.grad(full.sum.sum(), [hidden, head.weight])
    head.requires_grad_(False)
    hidden_sequence_logps(
        hidden, labels, head, vocab, chunk_elements=7 * vocab
    ).sum.sum().backward()
    assert head.weight.grad is None and head.bias.grad is None
    assert (hidden.grad - want_hidden).abs().max() <= 1e-6 * want_hidden.abs().max()
    head.requires_grad_(True)
    frozen = hidden.detach()
    got = hidden_sequence_logps(frozen, labels, head, vocab, chunk_elements=7 * vocab)
    got.sum.sum().backward()
    assert (head.weight.grad - want_weight).abs().max() <= 1e-6 * want_weight.abs().max()


class HalvedLinear(torch.nn.Linear):
    """A head whose forward is not F.linear(x, weight, bias) (as LoRA or soft-capping)."""

    def forward(self, x):
        return super().forward(x) * 0.5


def test_heads_that_are_not_a_plain_linear_are_called_as_modules():
    """A Linear subclass with its own forward, and a head without `.weight`, are called as
    modules: their own outputs are scored, with the full path's gradients."""
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab = 50
    hidden, linear, labels = head_case(vocab)
    halved = HalvedLinear(8, vocab)
    halved.load_state_dict(linear.state_dict())
    for head in (halved, torch.nn.Sequential(linear, torch.nn.Tanh())):
        params = [hidden, *head.parameters()]
        full = sequence_logps(head(hidden), labels)
        got = hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=7 * vocab)
        torch.testing.assert_close(got.sum, full.sum, rtol=1e-6, atol=0)
        for a, b in zip(grads_of(got, params), grads_of(full, params), strict=True):
            assert (a - b).abs().max() <= 1e-6 * b.abs().max()


class _Status(Enum):
    AVAILABLE = 1
    NOT_AVAILABLE = 2


def fake_zero3(param: torch.nn.Parameter, log: list[str]) -> None:
    """DeepSpeed ZeRO-3's view of a parameter: `.data` empty until `all_gather`, emptied
    again by `partition` (the API `_zero3_gathered` uses; the real one is tested by
    tests/test_zero3_bf16.py)."""
    full = param.data.clone()
    param.ds_id, param.ds_status, param.ds_active_sub_modules = 0, _Status.NOT_AVAILABLE, set()

    def all_gather(param_list):
        for p in param_list:
            p.data, p.ds_status = full, _Status.AVAILABLE
        log.append("gather")

    def partition(param_list):
        for p in param_list:
            p.data, p.ds_status = torch.empty(0, dtype=full.dtype), _Status.NOT_AVAILABLE
        log.append("partition")

    param.all_gather, param.partition = all_gather, partition
    param.data = torch.empty(0, dtype=full.dtype)


@pytest.mark.parametrize("last_scored", [19, 0])
def test_zero3_partitioned_head_is_gathered_once_each_way(last_scored):
    """A ZeRO-3-partitioned head weight is gathered for the forward and once more for the
    backward, whatever the number of chunks (17 here), also on a rank with no scored token
    (the gathers are collectives: every rank must make the same number); gradients have the
    weight's full shape and equal the unpartitioned ones."""
    from raydaa.core.logprobs import hidden_sequence_logps

    vocab = 50
    hidden, head, labels = head_case(vocab, bias=False)
    labels[:, : labels.shape[1] - last_scored] = IGNORE_INDEX
    want = grads_of(sequence_logps(head(hidden), labels), [hidden, head.weight])
    log = []
    fake_zero3(head.weight, log)
    got = hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=3 * vocab)
    assert log == ["gather", "partition"] and head.weight.numel() == 0
    # .backward (as DeepSpeed's engine calls it): the weight is partitioned again only once
    # its gradient is accumulated, which AccumulateGrad lays out like the weight's data
    weights = torch.arange(1, got.sum.shape[0] + 1, dtype=torch.float32)
    (got.sum * weights).sum().backward()
    assert log == ["gather", "partition"] * 2 and head.weight.numel() == 0
    grads = [hidden.grad, head.weight.grad]
    assert grads[1].shape == (vocab, 8)
    for a, b in zip(grads, want, strict=True):
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()
    with torch.no_grad():  # scoring gathers once too
        hidden_sequence_logps(hidden, labels, head, vocab, chunk_elements=3 * vocab)
    assert log == ["gather", "partition"] * 3
