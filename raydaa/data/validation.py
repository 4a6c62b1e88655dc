"""Checking rows before a run: every bad row is dropped and counted by reason in a
`ValidationReport`; a run refuses to start (`DataValidationError`) when their share is above
a threshold. `check_rows` keeps the rendered kept rows for `tokenize`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import jinja2
from trl.data_utils import extract_prompt

from raydaa.data.errors import DataValidationError
from raydaa.data.formats import DataFormat, detect_format
from raydaa.data.sources import Unparsable, load_rows, public_dataset
from raydaa.data.templating import render

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
    data_format: str | None = None
    """The accepted format the rows were read in (raydaa.data.formats), as text."""

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
            f"format: {self.data_format or 'unknown'}",
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


def normalize(row: dict, fmt: DataFormat) -> tuple[str, None] | tuple[None, tuple[Any, tuple[Any, ...]]]:
    """(reason, None) for a bad row, else (None, (prompt, completions)): prompt and each
    completion are message lists (conversational) or strings (standard; a `text` row is an
    empty prompt and the whole text as its completion, so every token is trained on)."""
    if fmt.chosen_only:  # SFT from preference pairs: the prompt and the chosen answer
        reason, example = normalize(row, fmt.as_pairs())
        return (reason, None) if example is None else (None, (example[0], example[1][:1]))
    fields = fmt.fields
    if any(row.get(f) is None for f in fields):
        return "missing_field", None
    if not fmt.conversational:
        if not all(isinstance(row[f], str) for f in fields):
            return "wrong_type", None
        if fields == ("text",):
            return None, ("", (row["text"],))
        if fmt.implicit_prompt:  # the shared leading text is the prompt (TRL's rule)
            split = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
            return None, (split["prompt"], (split["chosen"], split["rejected"]))
        return None, (row["prompt"], tuple(row[f] for f in fields[1:]))
    if fmt.kind == "sft" and fields == ("messages",):
        if not _is_messages(row["messages"]) or len(row["messages"]) < 2:
            return "wrong_type", None
        prompt, completions = row["messages"][:-1], (row["messages"][-1:],)
    elif fmt.kind == "sft":
        prompt, completions = row["prompt"], (row["completion"],)
    else:
        if not (_is_messages(row["chosen"]) and _is_messages(row["rejected"])):
            return "wrong_type", None
        prompt = row.get("prompt")
        if not _is_messages(prompt):
            # Implicit prompt, or UltraFeedback's: a string that is also the shared first
            # turn of chosen and rejected; TRL's extract_prompt splits that shared prefix off.
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


def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)


def _text_of(x: str | list[dict]) -> str:
    return x if isinstance(x, str) else "".join(m["content"] for m in x)


def _excerpt(row: Any, width: int = 100) -> str:
    text = str(row) if isinstance(row, str) else json.dumps(row, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class Checked:
    """The rows of one source that passed the checks, rendered when a tokenizer was given
    (what `tokenize` turns into ids), with the report of those that did not."""

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


def check_rows(source: Any, *, kind: str | None, split: str, tokenizer: Any, max_length: int | None,
               name: str | None) -> Checked:
    """Read and check every row of `source`; with a tokenizer, render the kept rows and
    (given `max_length`) drop prompts that fill the window."""
    rows, source_name = load_rows(source, split)
    fmt, conversational = detect_format(rows, kind, name or source_name)
    report = ValidationReport(name or source_name, fmt.kind, len(rows), conversational=conversational,
                              data_format=str(fmt))
    kind = fmt.kind
    if conversational and tokenizer is not None and tokenizer.chat_template is None:
        raise ValueError(f"{report.source}: conversational data needs a tokenizer with a chat_template")
    checked, seen = Checked(report), set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            report.add("malformed_json" if isinstance(row, Unparsable) else "wrong_type", index, _excerpt(row))
            continue
        reason, example = normalize(row, fmt)
        if example is not None:
            prompt, completions = example
            # A digest, not the text: UltraChat's 200k conversations would take GBs.
            key = hashlib.sha256(json.dumps([prompt, *completions], sort_keys=True).encode()).digest()
            reason = _content_problem(kind, completions, key, seen)
        if reason is None and tokenizer is not None:
            try:
                prompt, completions = render(prompt, completions, tokenizer)
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


def _check_prompt_lengths(checked: Checked, tokenizer: Any, max_length: int, rows: Sequence[Any]) -> None:
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
    return check_rows(source, kind=kind, split=split, tokenizer=tokenizer, max_length=max_length, name=name).report


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

