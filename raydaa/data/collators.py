"""Batching tokenized rows into padded tensors for the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from raydaa.data.tokenize import IGNORE_INDEX


def _pad(seqs: list[Any], value: int) -> torch.Tensor:
    """Right-pad 1-D sequences into a (B, T) long tensor."""
    return pad_sequence([torch.as_tensor(s, dtype=torch.long) for s in seqs], batch_first=True,
                        padding_value=value)


@dataclass(frozen=True)
class SFTCollator:
    """Rows of `prepare_sft` -> {input_ids, attention_mask, labels: (B, T), index: (B,)}."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [r["input_ids"] for r in rows]
        return {
            "input_ids": _pad(ids, self.pad_token_id),
            "attention_mask": _pad([[1] * len(x) for x in ids], 0),
            "labels": _pad([r["labels"] for r in rows], IGNORE_INDEX),
            "index": torch.tensor([int(r["index"]) for r in rows]),
        }


@dataclass(frozen=True)
class PreferenceCollator:
    """Rows of `prepare_preferences` -> chosen_/rejected_ {input_ids, attention_mask,
    labels}: (B, T) each, plus index: (B,).

    Chosen and rejected share one T, so a worker can concatenate them into a single
    (2B, T) forward pass.
    """

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        n = len(rows)
        ids = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        both = {  # (2B, T): chosen rows first, then rejected
            "input_ids": _pad(ids, self.pad_token_id),
            "attention_mask": _pad([[1] * len(x) for x in ids], 0),
            "labels": _pad([r["chosen_labels"] for r in rows] + [r["rejected_labels"] for r in rows],
                           IGNORE_INDEX),
        }
        batch = {f"chosen_{k}": v[:n] for k, v in both.items()}
        batch |= {f"rejected_{k}": v[n:] for k, v in both.items()}
        batch["index"] = torch.tensor([int(r["index"]) for r in rows])
        return batch
