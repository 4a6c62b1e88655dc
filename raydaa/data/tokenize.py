"""Tokenizing checked rows: prompt + completion ids with prompt positions masked out of the
loss, truncation to the window, the SFT fraction, and the fingerprint that keys the
reference log-prob cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from raydaa.data.validation import DEFAULT_THRESHOLD, Checked, ValidationReport, check_rows

IGNORE_INDEX = -100  # label of prompt and padding positions: no loss there


def truncate(prompt_ids: Sequence[int], completion_ids: Sequence[int], max_length: int,
             ) -> tuple[list[int], list[int]] | None:
    """Fit prompt + completion into `max_length` tokens, or None when no completion token fits.

    The completion is what the loss is about, so it is kept whole and the prompt is cut
    from the LEFT (its end, next to the answer, matters most). A completion longer than
    the window loses its tail instead. A prompt that alone fills the window leaves no
    room for the completion: None (the row is dropped and counted as prompt_over_length).
    """
    prompt, completion = list(prompt_ids), list(completion_ids)
    if len(prompt) >= max_length:
        return None
    if len(prompt) + len(completion) <= max_length:
        return prompt, completion
    if len(completion) < max_length:
        return prompt[len(prompt) + len(completion) - max_length:], completion
    return prompt, completion[: max_length - len(prompt)]


def _with_eos(ids: list[int], tokenizer: Any) -> list[int]:
    """Completion ids ending the turn with EOS. A chat template's own end of turn is kept
    as it is (Zephyr's `</s>`, ChatML's `<|im_end|>` followed by a newline), as TRL does:
    appending EOS after that newline would train a second end of turn."""
    eos = tokenizer.eos_token_id
    if eos in ids:
        after = ids[len(ids) - ids[::-1].index(eos):]
        if not tokenizer.decode(after).strip():
            return ids
    return ids + [eos]


def _tokenize(checked: Checked, tokenizer: Any, max_length: int) -> datasets.Dataset:
    """input_ids / labels (-100 on the prompt) per completion, with the row's index."""
    kind = checked.report.kind
    names = ("",) if kind == "sft" else ("chosen_", "rejected_")
    columns: dict[str, list] = {"index": checked.indices}
    for j, prefix in enumerate(names):
        texts = [c[j] for c in checked.completions]
        completion_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        input_ids, labels = [], []
        for prompt, completion in zip(checked.prompt_ids, completion_ids, strict=True):
            # Never None: prompts that fill the window were dropped by the length check.
            prompt, completion = truncate(prompt, _with_eos(completion, tokenizer), max_length)
            input_ids.append(prompt + completion)
            labels.append([IGNORE_INDEX] * len(prompt) + completion)
        columns[f"{prefix}input_ids"], columns[f"{prefix}labels"] = input_ids, labels
    ids = datasets.List(datasets.Value("int32"))
    features = datasets.Features({name: ids for name in columns} | {"index": datasets.Value("int64")})
    return datasets.Dataset.from_dict(columns, features=features)


def template_id(tokenizer: Any, conversational: bool | None) -> str:
    """What the fingerprint records about formatting: the chat template, or "plain"."""
    return str(tokenizer.chat_template) if conversational else "plain"


def fingerprint(dataset: datasets.Dataset, *, max_length: int, template: str) -> str:
    """sha256 over the tokenized content (every column, in row order), `max_length` and
    the template: the key of the reference log-prob cache. Independent of how the
    columns are chunked or whether ids are stored as int32 or int64."""
    h = hashlib.sha256(json.dumps({"max_length": max_length, "template": template}).encode())
    table = dataset.with_format("arrow")[:]  # applies any select() indices
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        h.update(name.encode())
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            h.update(np.asarray(column.value_lengths(), dtype=np.int64).tobytes())
            column = column.flatten()
        h.update(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass
class Prepared:
    """Tokenized, validated data ready for a run."""

    dataset: datasets.Dataset
    """Arrow-backed rows: index, input_ids, labels (SFT) or chosen_/rejected_ ones (preference)."""
    report: ValidationReport
    max_length: int
    template: str

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.dataset, max_length=self.max_length, template=self.template)


def _prepare(source: Any, tokenizer: Any, kind: str, *, max_length: int, split: str, threshold: float,
             name: str | None) -> Prepared:
    checked = check_rows(source, kind=kind, split=split, tokenizer=tokenizer, max_length=max_length, name=name)
    checked.report.raise_above(threshold)
    return Prepared(_tokenize(checked, tokenizer, max_length), checked.report, max_length,
                    template_id(tokenizer, checked.report.conversational))


def prepare_sft(source: str | Path | datasets.Dataset | Sequence[dict], tokenizer: Any, *, max_length: int,
                split: str = "train", fraction: float = 1.0, seed: int = 0,
                threshold: float = DEFAULT_THRESHOLD, name: str | None = None) -> Prepared:
    """Validated, templated, tokenized SFT data, reduced to `fraction` of its rows.

    Raises `DataValidationError` above `threshold` bad rows; below it they are dropped
    and counted in `.report`.
    """
    prepared = _prepare(source, tokenizer, "sft", max_length=max_length, split=split,
                        threshold=threshold, name=name)
    prepared.dataset = select_fraction(prepared.dataset, fraction, seed)
    return prepared


def prepare_preferences(source: str | Path | datasets.Dataset | Sequence[dict], tokenizer: Any, *,
                        max_length: int, split: str = "train", threshold: float = DEFAULT_THRESHOLD,
                        name: str | None = None) -> Prepared:
    """Validated, templated, tokenized preference pairs (see `prepare_sft`)."""
    return _prepare(source, tokenizer, "preference", max_length=max_length, split=split,
                    threshold=threshold, name=name)


def select_fraction(dataset: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """`fraction` (0.01-1) of the rows, drawn by a seeded permutation, in source order.

    The rows are a prefix of one permutation of the dataset, so the same seed and fraction
    give the same rows, and a smaller fraction is a subset of a larger one.
    """
    if not 0.01 <= fraction <= 1.0:
        raise ValueError(f"SFT data fraction must be in [0.01, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    k = max(1, round(fraction * len(dataset)))
    order = np.random.default_rng(seed).permutation(len(dataset))[:k]
    return dataset.select(np.sort(order))


def load_tokenizer(scenario):
    """The scenario's tokenizer: a built-in one (raydaa.scenarios), or the model's from the hub."""
    from raydaa.scenarios.assets import builtin_tokenizer

    tokenizer = builtin_tokenizer(scenario)
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    from raydaa.io import storage

    # an s3:// / gs:// model folder is copied to this node first, as its weights are
    tokenizer = AutoTokenizer.from_pretrained(storage.local_copy(scenario.model.hf_id))
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"model.hf_id {scenario.model.hf_id}: its tokenizer has no eos_token, which ends "
            "every completion and stops sampling; set one and save the tokenizer again"
        )
    if tokenizer.pad_token_id is None:  # Llama ships none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
