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
                assert got.sum[i].item() == pytest.approx(alone.sum.item(), abs=1e-9), (
                    side,
                    key,
                    i,
                )
                assert got.count[i].item() == len(c)
