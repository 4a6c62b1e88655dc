"""Load, validate, template and tokenize SFT and preference data.

Sources: the paper's public datasets by hub name (UltraFeedback-binarized, UltraChat-200k,
Reddit TL;DR SFT and preferences), local JSONL / Parquet / Arrow files or `save_to_disk`
folders in the same schemas, or an in-memory `datasets.Dataset` (the `tiny` scenario).
Two formats: conversational (lists of {"role", "content"} messages, rendered with the
tokenizer's chat template) and plain text (TL;DR: prompt + completion strings).

Every row is checked before training; bad rows are dropped and counted by reason in a
`ValidationReport`, and a run refuses to start when their share is above a threshold
(1% by default): a broken file should stop a sweep, not quietly shrink it.

Tokenized data stays an Arrow-backed `datasets.Dataset` with a stable integer `index`
per row (the row's position in the source), which the reference log-prob cache uses
together with `fingerprint()`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.nn.utils.rnn import pad_sequence
from trl.data_utils import apply_chat_template, extract_prompt

IGNORE_INDEX = -100  # label of prompt and padding positions: no loss there
DEFAULT_THRESHOLD = 0.01
MAX_SHOWN_ROWS = 5  # offending row indices kept per reason

REASONS = {
    "malformed_json": "line is not valid JSON",
    "missing_field": "a required field is absent or null",
    "wrong_type": "wrong type or structure (not text / a message list ending with the assistant)",
    "empty_completion": "completion (or chosen / rejected) is empty or whitespace",
    "identical_pair": "chosen is identical to rejected",
    "duplicate": "same prompt + chosen + rejected (or prompt + completion) seen before",
    "prompt_over_length": "prompt alone fills max_length: no completion token would fit",
}


@dataclass(frozen=True)
class PublicDataset:
    """A dataset of the paper, loaded from the hub by `datasets.load_dataset`."""

    path: str
    kind: str  # "sft" or "preference"
    splits: dict[str, str]  # our split name ("train" / "test") -> the hub's split name
    max_length: int  # the paper's sequence length for this data


PUBLIC_DATASETS = {
    "ultrafeedback": PublicDataset(
        "HuggingFaceH4/ultrafeedback_binarized", "preference", {"train": "train_prefs", "test": "test_prefs"}, 4096),
    "ultrachat": PublicDataset(
        "HuggingFaceH4/ultrachat_200k", "sft", {"train": "train_sft", "test": "test_sft"}, 4096),
    "tldr": PublicDataset("trl-lib/tldr", "sft", {"train": "train", "test": "validation"}, 1024),
    "tldr-preference": PublicDataset(
        "trl-lib/tldr-preference", "preference", {"train": "train", "test": "validation"}, 1024),
}


def public_dataset(name: str) -> PublicDataset | None:
    """The public dataset called `name` (short alias or hub path), or None."""
    return PUBLIC_DATASETS.get(name) or next((d for d in PUBLIC_DATASETS.values() if d.path == name), None)


class DataValidationError(ValueError):
    """Too many bad rows to start a run; the message names the source, counts and rows."""


@dataclass
class ValidationReport:
    """What the checks found in one source."""

    source: str
    """File path, hub name or dataset name: what the user must go and fix."""
    kind: str
    """"sft" or "preference"."""
    total: int
    """Rows read, bad ones included."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    """Bad rows per reason; each bad row is counted under its first failing check."""
    first_rows: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    """Per reason, the first offending (row index, short excerpt) pairs."""
    conversational: bool | None = None
    """Chat-message rows (True) or plain text (False); None if no row told."""
    max_length: int | None = None
    """Length the prompt check used; None when it was skipped (no tokenizer)."""

    @property
    def n_bad(self) -> int:
        return sum(self.counts.values())

    @property
    def n_kept(self) -> int:
        return self.total - self.n_bad

    @property
    def fraction_bad(self) -> float:
        return self.n_bad / self.total if self.total else 0.0

    def add(self, reason: str, index: int, excerpt: str) -> None:
        self.counts[reason] += 1
        shown = self.first_rows.setdefault(reason, [])
        if len(shown) < MAX_SHOWN_ROWS:
            shown.append((index, excerpt))

    def summary(self) -> str:
        """One line per failing reason: count and first row indices."""
        return "; ".join(
            f"{reason} {n} (rows {', '.join(str(i) for i, _ in self.first_rows[reason])}"
            f"{', ...' if n > len(self.first_rows[reason]) else ''})"
            for reason, n in self.counts.items() if n
        )

    def format(self) -> str:
        """A readable table of the findings."""
        fmt = {True: "conversational", False: "plain text", None: "format unknown"}[self.conversational]
        length = f"max_length {self.max_length}" if self.max_length else "length check skipped: no tokenizer"
        lines = [
            f"data check: {self.source} ({self.kind}, {fmt}, {length})",
            f"rows {self.total}, bad {self.n_bad} ({self.fraction_bad:.2%}), kept {self.n_kept}",
            f"  {'reason':<20}{'rows':>7}  first offending rows",
        ]
        for reason, n in self.counts.items():
            rows = ", ".join(str(i) for i, _ in self.first_rows.get(reason, []))
            lines.append(f"  {reason:<20}{n:>7}  {rows}")
        for reason, shown in self.first_rows.items():
            for index, excerpt in shown[:2]:
                lines.append(f"  e.g. {reason} row {index}: {excerpt}")
        return "\n".join(lines)

    def raise_above(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Raise `DataValidationError` when more than `threshold` of the rows are bad,
        or when none is usable."""
        if self.n_kept == 0:
            raise DataValidationError(f"{self.source}: no usable row out of {self.total}. {self.summary()}")
        if self.fraction_bad > threshold:
            raise DataValidationError(
                f"{self.source}: {self.n_bad} of {self.total} rows ({self.fraction_bad:.2%}) are bad, "
                f"above the {threshold:.2%} threshold: {self.summary()}. "
                "Fix the data or raise the threshold; `raydaa data check` prints the full report."
            )


# ---------------------------------------------------------------- loading


class _Unparsable(str):
    """A JSONL line that did not parse (kept to be reported, not to be used)."""


def _read_json_lines(path: Path) -> list[Any]:
    """Raw Python rows, read before any Arrow typing so wrong types stay visible
    (Arrow would refuse a column mixing str and int). A file that opens with "[" is
    read as one JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(_Unparsable(line))
    return rows


def _read_arrow(path: Path) -> datasets.Dataset:
    """An Arrow IPC stream (what `datasets` writes) or IPC file (Feather v2)."""
    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(source).read_all()
    return datasets.Dataset(table)


def load_rows(source: str | Path | datasets.Dataset | Sequence[dict], split: str = "train",
              ) -> tuple[Sequence[Any], str]:
    """(rows, source name) of a local file, a `save_to_disk` folder, a public dataset
    (alias or hub name; `split` is "train"/"test" or the hub's own split name), an
    in-memory `Dataset` or a list of dicts."""
    if isinstance(source, datasets.Dataset):
        return source, source.info.dataset_name or "<in-memory dataset>"
    if not isinstance(source, str | Path):
        return list(source), "<in-memory rows>"
    path = Path(source)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return (loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded), str(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return _read_json_lines(path), str(path)
        if suffix == ".parquet":
            return datasets.Dataset(pq.read_table(path)), str(path)
        if suffix in (".arrow", ".feather"):
            return _read_arrow(path), str(path)
        raise ValueError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .parquet or .arrow")
    spec = public_dataset(str(source))
    if spec is None:
        raise FileNotFoundError(
            f"{source}: neither a local file nor a known dataset ({', '.join(PUBLIC_DATASETS)})")
    hub_split = spec.splits.get(split, split)
    return datasets.load_dataset(spec.path, split=hub_split), f"{spec.path}[{hub_split}]"


# ---------------------------------------------------------------- checking


def _columns(rows: Sequence[Any]) -> set[str]:
    if isinstance(rows, datasets.Dataset):
        return set(rows.column_names)
    return {key for row in rows if isinstance(row, dict) for key in row}


def infer_kind(rows: Sequence[Any]) -> str:
    """"preference" if the rows have chosen and rejected, else "sft"."""
    return "preference" if {"chosen", "rejected"} <= _columns(rows) else "sft"


def _main_field(kind: str, columns: set[str]) -> str:
    """The field whose type tells conversational from plain rows."""
    if kind == "preference":
        return "chosen"
    return "messages" if "messages" in columns else "completion"


def _required(kind: str, main: str, conversational: bool) -> tuple[str, ...]:
    """Fields a row must have. Conversational preferences may leave the prompt implicit
    in chosen / rejected (UltraFeedback repeats it there as the first turn)."""
    if kind == "preference":
        return ("chosen", "rejected") if conversational else ("prompt", "chosen", "rejected")
    return ("messages",) if main == "messages" else ("prompt", "completion")


def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)


def _is_conversational(rows: Sequence[Any], main: str) -> bool | None:
    """Decided by the first row whose main field is set; rows that differ are wrong_type."""
    for row in rows:
        if isinstance(row, dict) and row.get(main) is not None:
            return isinstance(row[main], list)
    return None


def _text_of(x: str | list[dict]) -> str:
    return x if isinstance(x, str) else "".join(m["content"] for m in x)


def _normalize(row: dict, kind: str, fields: tuple[str, ...], conversational: bool,
               ) -> tuple[str, None] | tuple[None, tuple[Any, tuple[Any, ...]]]:
    """(reason, None) for a bad row, else (None, (prompt, completions)): prompt and each
    completion are message lists (conversational) or strings (plain)."""
    if any(row.get(f) is None for f in fields):
        return "missing_field", None
    if not conversational:
        if not all(isinstance(row[f], str) for f in fields):
            return "wrong_type", None
        return None, (row["prompt"], tuple(row[f] for f in fields[1:]))
    if kind == "sft" and fields == ("messages",):
        if not _is_messages(row["messages"]) or len(row["messages"]) < 2:
            return "wrong_type", None
        prompt, completions = row["messages"][:-1], (row["messages"][-1:],)
    elif kind == "sft":
        prompt, completions = row["prompt"], (row["completion"],)
    else:
        if not (_is_messages(row["chosen"]) and _is_messages(row["rejected"])):
            return "wrong_type", None
        prompt = row.get("prompt")
        if not _is_messages(prompt):
            # UltraFeedback: the prompt is a string and also the shared first turn of
            # chosen and rejected; TRL's extract_prompt splits that shared prefix off.
            if prompt is not None and not isinstance(prompt, str):
                return "wrong_type", None
            split = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
            prompt = split["prompt"] or ([{"role": "user", "content": prompt}] if prompt else [])
            completions = (split["chosen"], split["rejected"])
        else:
            completions = (row["chosen"], row["rejected"])
    if not (_is_messages(prompt) and all(_is_messages(c) and c[-1]["role"] == "assistant" for c in completions)):
        return "wrong_type", None
    return None, (prompt, completions)


def _excerpt(row: Any, width: int = 100) -> str:
    text = str(row) if isinstance(row, str) else json.dumps(row, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _render(prompt: Any, completions: tuple[Any, ...], tokenizer: Any) -> tuple[str, tuple[str, ...]]:
    """Prompt and completion texts: chat template for messages, as-is for plain text.

    Through TRL's `apply_chat_template`: the prompt with add_generation_prompt=True, each
    completion as what the template adds after it (the assistant turn and its end-of-turn).
    """
    if isinstance(prompt, str):
        return prompt, completions
    if len(completions) == 1:
        out = apply_chat_template({"prompt": prompt, "completion": completions[0]}, tokenizer)
        return out["prompt"], (out["completion"],)
    out = apply_chat_template({"prompt": prompt, "chosen": completions[0], "rejected": completions[1]}, tokenizer)
    return out["prompt"], (out["chosen"], out["rejected"])


@dataclass
class _Checked:
    report: ValidationReport
    indices: list[int] = field(default_factory=list)  # source row index of each kept row
    prompts: list[Any] = field(default_factory=list)  # rendered text when a tokenizer was given
    completions: list[tuple[Any, ...]] = field(default_factory=list)  # same
    prompt_ids: list[list[int]] = field(default_factory=list)  # filled by the length check


def _content_problem(kind: str, completions: tuple[Any, ...], key: bytes, seen: set[bytes]) -> str | None:
    """Reason a well-formed row is still unusable, or None (then `key` joins `seen`)."""
    texts = [_text_of(c).strip() for c in completions]
    if not all(texts):
        return "empty_completion"
    if kind == "preference" and texts[0] == texts[1]:
        return "identical_pair"
    if key in seen:
        return "duplicate"
    seen.add(key)
    return None


def _check(source: Any, *, kind: str | None, split: str, tokenizer: Any, max_length: int | None,
           name: str | None) -> _Checked:
    rows, source_name = load_rows(source, split)
    kind = kind or infer_kind(rows)
    main = _main_field(kind, _columns(rows))
    conversational = _is_conversational(rows, main)
    fields = _required(kind, main, bool(conversational))
    report = ValidationReport(name or source_name, kind, len(rows), conversational=conversational)
    if conversational and tokenizer is not None and tokenizer.chat_template is None:
        raise ValueError(f"{report.source}: conversational data needs a tokenizer with a chat_template")
    checked, seen = _Checked(report), set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            report.add("malformed_json" if isinstance(row, _Unparsable) else "wrong_type", index, _excerpt(row))
            continue
        reason, example = _normalize(row, kind, fields, bool(conversational))
        if example is not None:
            prompt, completions = example
            # A digest, not the text: UltraChat's 200k conversations would take GBs.
            key = hashlib.sha256(json.dumps([prompt, *completions], sort_keys=True).encode()).digest()
            reason = _content_problem(kind, completions, key, seen)
        if reason is None and tokenizer is not None:
            try:
                prompt, completions = _render(prompt, completions, tokenizer)
            except (jinja2.TemplateError, KeyError, TypeError, ValueError) as err:
                # The template rejects these turns (e.g. roles out of order): the row's fault.
                reason, row = "wrong_type", {"template_error": str(err), **row}
        if reason is not None:
            report.add(reason, index, _excerpt(row))
            continue
        checked.indices.append(index)
        checked.prompts.append(prompt)
        checked.completions.append(completions)
    if tokenizer is not None and max_length is not None:
        _check_prompt_lengths(checked, tokenizer, max_length, rows)
    return checked


def _check_prompt_lengths(checked: _Checked, tokenizer: Any, max_length: int, rows: Sequence[Any]) -> None:
    """Drop (and count) rows whose prompt alone takes the whole window."""
    report = checked.report
    report.max_length = max_length
    # Plain prompts get the tokenizer's own specials (e.g. BOS); rendered chat text has them.
    ids = tokenizer(checked.prompts, add_special_tokens=not report.conversational)["input_ids"] if checked.prompts else []
    keep = [len(p) < max_length for p in ids]
    for index, ok in zip(checked.indices, keep, strict=True):
        if not ok:
            report.add("prompt_over_length", index, _excerpt(rows[index]))
    checked.indices, checked.prompts, checked.completions, checked.prompt_ids = (
        [x for x, ok in zip(seq, keep, strict=True) if ok]
        for seq in (checked.indices, checked.prompts, checked.completions, ids))


def check_data(source: str | Path | datasets.Dataset | Sequence[dict], *, kind: str | None = None,
               split: str = "train", tokenizer: Any = None, max_length: int | None = None,
               name: str | None = None) -> ValidationReport:
    """Check every row of `source` and count the bad ones by reason.

    `kind` ("sft" / "preference") is inferred from the columns when omitted. The prompt
    length check needs `tokenizer` (and `max_length`; by default the public dataset's,
    or the tokenizer's model_max_length); without a tokenizer it is skipped.
    """
    if tokenizer is not None and max_length is None:
        spec = public_dataset(str(source)) if isinstance(source, str | Path) else None
        max_length = spec.max_length if spec else tokenizer.model_max_length
    return _check(source, kind=kind, split=split, tokenizer=tokenizer, max_length=max_length, name=name).report


# ---------------------------------------------------------------- tokenizing


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


def _with_eos(ids: list[int], eos_token_id: int) -> list[int]:
    """Completion ids ending with EOS (chat templates like Zephyr's already add it)."""
    return ids if ids and ids[-1] == eos_token_id else ids + [eos_token_id]


def _tokenize(checked: _Checked, tokenizer: Any, max_length: int) -> datasets.Dataset:
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
            prompt, completion = truncate(prompt, _with_eos(completion, tokenizer.eos_token_id), max_length)
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
    checked = _check(source, kind=kind, split=split, tokenizer=tokenizer, max_length=max_length, name=name)
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


# ---------------------------------------------------------------- batching


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


# ---------------------------------------------------------------- CLI entry


def _scenario_reports(scenario: str) -> list[ValidationReport]:
    from raydaa.scenarios import TINY_MAX_LENGTH, build_tiny_tokenizer, tiny_datasets

    tokenizer = build_tiny_tokenizer()
    return [check_data(ds, tokenizer=tokenizer, max_length=TINY_MAX_LENGTH, name=f"{scenario}:{split}")
            for split, ds in tiny_datasets().items()]


def data_check_main(path_or_scenario: str, threshold: float = DEFAULT_THRESHOLD, *, split: str = "train",
                    tokenizer: Any = None, max_length: int | None = None) -> int:
    """`raydaa data check`: print the report(s) of a built-in scenario or a file / dataset.

    `tokenizer` (object or local path) turns on the prompt length check. Returns 0 when
    every source is within `threshold`, 1 when one is above it, 2 when it cannot be read.
    """
    from raydaa.scenarios import BUILTIN_SCENARIOS

    try:
        if path_or_scenario in BUILTIN_SCENARIOS:
            reports = _scenario_reports(path_or_scenario)
        else:
            if isinstance(tokenizer, str | Path):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
            reports = [check_data(path_or_scenario, split=split, tokenizer=tokenizer, max_length=max_length)]
    except (OSError, ValueError) as err:
        print(f"data check: cannot read {path_or_scenario}: {err}")
        return 2
    return print_reports(reports, threshold)


def print_reports(reports: Sequence[ValidationReport], threshold: float) -> int:
    """Print each report with its verdict; 1 when any is above `threshold` or unusable."""
    status = 0
    for report in reports:
        print(report.format())
        over = report.fraction_bad > threshold or report.n_kept == 0
        print(f"=> {'REFUSED' if over else 'ok'}: {report.fraction_bad:.2%} bad "
              f"({'above' if over else 'within'} the {threshold:.2%} threshold)\n")
        status = max(status, int(over))
    return status


__all__ = [
    "DEFAULT_THRESHOLD", "IGNORE_INDEX", "PUBLIC_DATASETS", "REASONS", "DataValidationError",
    "PreferenceCollator", "Prepared", "PublicDataset", "SFTCollator", "ValidationReport", "check_data",
    "data_check_main", "fingerprint", "print_reports", "infer_kind", "load_rows", "prepare_preferences", "prepare_sft",
    "public_dataset", "select_fraction", "template_id", "truncate",
]
