"""The row formats raydaa reads (TRL's dataset formats, plus UltraFeedback's shape), and
telling which one a source is in from its columns and first rows.

Preference: explicit prompt (prompt + chosen + rejected) or implicit prompt (chosen +
rejected, both holding prompt + answer: the prompt is their shared prefix, split off by
TRL's `extract_prompt`), each standard (strings) or conversational (message lists);
UltraFeedback's prompt string beside chosen / rejected conversations is the conversational
explicit format. SFT: `messages`, prompt + completion (standard or conversational),
plain `text` (language modelling: no prompt, every token is trained on), or any preference
format (the prompt and the chosen answer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raydaa.data.errors import DataSourceError
from raydaa.data.sources import column_names


@dataclass(frozen=True)
class DataFormat:
    """One accepted row format."""

    kind: str
    """"sft" or "preference"."""
    fields: tuple[str, ...]
    """Columns every row must have."""
    conversational: bool
    """Message lists (rendered with the chat template) or strings (as they are)."""
    description: str
    chosen_only: bool = False
    """SFT data given as preference pairs: each row trains on its prompt and chosen answer."""

    @property
    def main(self) -> str:
        """The field whose type tells conversational from standard rows."""
        return "chosen" if self.kind == "preference" or self.chosen_only else self.fields[-1]

    def as_pairs(self) -> DataFormat:
        """The preference format an SFT-from-pairs format reads its rows in."""
        return dataclasses.replace(self, kind="preference", chosen_only=False)

    @property
    def implicit_prompt(self) -> bool:
        return self.kind == "preference" and "prompt" not in self.fields

    @property
    def has_prompt(self) -> bool:
        """Rows give a prompt (explicit, extractable, or all but the last message)."""
        return self.fields != ("text",)

    def __str__(self) -> str:
        return f"{self.kind} {'/'.join(self.fields)} ({self.description})"


# In the order they are tried: explicit before implicit prompts, messages before
# prompt + completion before text, so that extra columns (UltraFeedback has them all) pick
# the richest format.
FORMATS = (
    DataFormat("preference", ("prompt", "chosen", "rejected"), True,
               "conversational, explicit prompt: message lists; the prompt may be a string "
               "repeated as the first turn, as in UltraFeedback"),
    DataFormat("preference", ("prompt", "chosen", "rejected"), False,
               "standard, explicit prompt: strings"),
    DataFormat("preference", ("chosen", "rejected"), True,
               "conversational, implicit prompt: the shared first turns are the prompt"),
    DataFormat("preference", ("chosen", "rejected"), False,
               "standard, implicit prompt: the shared leading text is the prompt"),
    DataFormat("sft", ("messages",), True,
               "conversational: the last assistant turn is the completion"),
    DataFormat("sft", ("prompt", "completion"), True, "conversational prompt-completion"),
    DataFormat("sft", ("prompt", "completion"), False, "standard prompt-completion: strings"),
    DataFormat("sft", ("text",), False,
               "language modelling: plain text, every token trained on"),
)
# Preference pairs are SFT data too (prompt + chosen answer), tried after every SFT format:
# a user with one preference file can run stage 1 on it (UltraFeedback's rows have
# `messages`, which wins).
FORMATS += tuple(
    dataclasses.replace(f, kind="sft", chosen_only=True,
                        description=f"preference pairs ({f.description}): prompt + chosen answer")
    for f in FORMATS if f.kind == "preference"
)


class UnknownFormatError(DataSourceError):
    """No accepted format fits a source; the message names it, its columns and the formats."""


def accepted(kind: str | None = None) -> str:
    """The accepted formats (of `kind`), one per line."""
    return "\n".join(f"  - {f}" for f in FORMATS if kind in (None, f.kind))


def columns_of(rows: Sequence[Any]) -> set[str]:
    return set(column_names(rows))


def infer_kind(rows: Sequence[Any]) -> str:
    """"preference" if the rows have chosen and rejected, else "sft"."""
    return "preference" if {"chosen", "rejected"} <= columns_of(rows) else "sft"


def _first_is_list(rows: Sequence[Any], field: str) -> bool | None:
    """Whether the first row that sets `field` holds a list; None if no row sets it.
    Rows that differ from it are counted as wrong_type later."""
    for row in rows:
        if isinstance(row, dict) and row.get(field) is not None:
            return isinstance(row[field], list)
    return None


def detect_format(rows: Sequence[Any], kind: str | None, label: str) -> tuple[DataFormat, bool | None]:
    """(format, conversational as the rows tell it, None when no row does) of `rows`.

    Raises UnknownFormatError naming `label`, the columns found and the accepted formats."""
    columns = columns_of(rows)
    kind = kind or infer_kind(rows)
    candidates = [f for f in FORMATS if f.kind == kind and set(f.fields) <= columns]
    for fmt in candidates:
        told = _first_is_list(rows, fmt.main)
        if told is None or told == fmt.conversational:
            return fmt, told
    found = sorted(columns)
    why = "its columns fit none"
    if candidates:
        main = candidates[0].main
        holds = "message lists" if _first_is_list(rows, main) else "neither text nor message lists"
        why = f"column {main!r} holds {holds}, which no {kind} format with these columns expects"
    raise UnknownFormatError(
        f"{label}: no accepted {kind} format fits ({why}); columns found: {found}. "
        f"Accepted {kind} formats (columns, and what they hold):\n{accepted(kind)}\n"
        "Rename other columns with the source's `columns:` mapping ({our field: its column})."
    )
