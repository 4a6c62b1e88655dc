"""Per-sequence log-probs against a direct loop over tokens."""

import math

import pytest
import torch

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
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
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

    logits = model(input_ids=ids, attention_mask=mask,
                   position_ids=position_ids_from_mask(mask), use_cache=False).logits
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


def test_chunked_logps_never_hold_the_batch_logits():
    """The head sees the hidden states of one position per row inside the model's forward,
    then at most `chunk_elements // V` scored positions at a time: never (B, T, V)."""
    from raydaa.core.logprobs import model_sequence_logps

    vocab = 300
    model = small_lm(vocab)
    ids, mask, labels = scored_batch(vocab)
    shapes = []
    model.lm_head.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        model_sequence_logps(model, ids, mask, labels, chunk_elements=5 * vocab)
    assert shapes[0] == (3, 1, vocab)  # the model's own call: last position only
    assert [s[0] for s in shapes[1:]] == [5, 5, 5, 5, 5, 5, 2]  # 32 scored tokens, 5 at a time
    assert all(s[-1] == vocab for s in shapes[1:])


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
