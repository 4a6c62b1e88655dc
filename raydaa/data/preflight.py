"""Checks of a scenario's data before any training, cheap enough to run at every start:
each source opens and has rows in an accepted format, the validation set has prompts, and
`data.format` agrees with the data (or is inferred from it when `auto`).

Only columns and the first rows are looked at (nothing is tokenized): the full row checks
are `raydaa data check` and the stages' own (raydaa.data.validation). Evaluation reads its
prompts through `validation_set` here, so it sees exactly what was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raydaa.data.errors import DataSourceError
from raydaa.data.formats import DataFormat, columns_of, detect_format
from raydaa.data.sources import load_rows
from raydaa.data.validation import normalize

if TYPE_CHECKING:
    from raydaa.config.scenario import Scenario

ALL_SOURCES = ("sft", "preference", "validation")


@dataclass(frozen=True)
class OpenedSource:
    """One source of a scenario, opened: its rows (not yet checked) and format."""

    key: str
    """Scenario key, e.g. "data.preference"."""
    label: str
    """The file, folder or hub dataset read."""
    rows: Sequence[Any]
    format: DataFormat


@dataclass(frozen=True)
class ValidationSet:
    """The evaluation prompts of a scenario."""

    label: str
    rows: list[dict]
    """Per usable validation row, in source order: {"prompt", "chosen", "rejected"} (a
    preference set) or {"prompt", "completion"}; the prompt is a string or a message list,
    the row's own when explicit, extracted from chosen / rejected when implicit."""
    conversational: bool
    """Whether the prompts are message lists (rendered with the chat template)."""


def _where(scenario: Scenario, key: str) -> str:
    return f"scenario {scenario.name}, {key}"


def open_source(scenario: Scenario, which: str) -> OpenedSource:
    """`data.<which>` read and its format told; a DataSourceError names the scenario, the
    key, the path and what was expected."""
    source = scenario.data.source(which)
    kind = "sft" if which == "sft" else None
    try:
        rows, label = load_rows(source)  # its errors start with the key
    except DataSourceError as err:
        raise DataSourceError(f"scenario {scenario.name}, {err}") from None
    except (OSError, ValueError) as err:  # what `datasets` raises on an unreadable folder
        raise DataSourceError(f"{_where(scenario, source.key)}: {source.path}: {err}") from None
    try:
        fmt, _ = detect_format(rows, kind, label)
    except DataSourceError as err:
        raise DataSourceError(f"{_where(scenario, source.key)}: {err}") from None
    if which == "preference" and fmt.kind != "preference":
        raise DataSourceError(
            f"{_where(scenario, source.key)}: {label} has no chosen and rejected columns "
            f"(columns found: {sorted(columns_of(rows))}); map them with `columns:`"
        )
    return OpenedSource(source.key, label, rows, fmt)


def validation_set(scenario: Scenario, limit: int | None = None, *,
                   opened: OpenedSource | None = None) -> ValidationSet:
    """The first `limit` (default `generation.num_prompts`, else all) usable validation rows
    with their prompts (`opened`: data.validation, when already open). Raises
    DataSourceError when the set has no prompts, naming the file, the row and the column."""
    opened = opened or open_source(scenario, "validation")
    fmt, where = opened.format, f"{_where(scenario, opened.key)}: {opened.label}"
    if not fmt.has_prompt:
        raise DataSourceError(
            f"{where}: the validation set needs prompts (its prompts are the evaluation "
            f"prompts), but it is {fmt}: column 'text' has none. Give prompt + chosen + "
            "rejected, chosen + rejected sharing the prompt, prompt + completion or messages"
        )
    generation = getattr(scenario, "generation", None)
    limit = limit or (generation.num_prompts if generation else None) or len(opened.rows)
    out: list[dict] = []
    for index in range(len(opened.rows)):
        if len(out) == limit:
            break
        row = opened.rows[index]
        reason, example = normalize(row, fmt) if isinstance(row, dict) else ("wrong_type", None)
        if example is None:  # counted by `raydaa data check`; never a prompt
            continue
        prompt, completions = example
        if fmt.kind == "preference" and not fmt.implicit_prompt and _same_turn(prompt, row["prompt"]):
            prompt = row["prompt"]  # as given: a judge reads it (tiny's gold judge, a string)
        if not (prompt.strip() if isinstance(prompt, str) else prompt):
            column = "prompt" if "prompt" in fmt.fields else "chosen and rejected"
            raise DataSourceError(
                f"{where}: row {index} has no prompt (column {column}"
                f"{': they share no leading text or turn' if fmt.implicit_prompt else ' is empty'}); "
                "the validation prompts are the evaluation prompts"
            )
        names = ("chosen", "rejected") if fmt.kind == "preference" else ("completion",)
        out.append({"prompt": prompt, **dict(zip(names, completions, strict=True))})
    if not out:
        raise DataSourceError(f"{where}: no usable row (run `raydaa data check` for the reasons)")
    return ValidationSet(opened.label, out, fmt.conversational)


def _same_turn(extracted, given) -> bool:
    """Whether the prompt the model trains on (`extracted`) is just the row's `prompt`
    column: itself, or one user turn of it. UltraFeedback repeats its string prompt as the
    first turn of chosen and rejected, but a multi-turn row's earlier turns exist only
    there: sampling from the column alone would drop them."""
    if not isinstance(extracted, list):
        return extracted == given
    return extracted == given or (
        len(extracted) == 1 and extracted[0].get("role") == "user"
        and extracted[0].get("content") == given
    )


def _held(fmt: DataFormat) -> str:
    return "message lists (conversational)" if fmt.conversational else "strings (plain)"


def preflight(scenario: Scenario, which: Sequence[str] = ALL_SOURCES) -> str:
    """Check the scenario's sources `which` before any compute, and return the format the
    scenario runs with ("conversational" or "plain": `data.format`, or when `auto` the
    validation set's). Raises DataSourceError naming the file, the column and what was
    expected: a missing or empty source, no accepted format, a validation set without
    prompts, a source whose format contradicts `data.format` or the others."""
    declared = scenario.data.format
    opened = []
    if "validation" in which:
        opened.append(open_source(scenario, "validation"))
        val = validation_set(scenario, opened=opened[0])
        judge = getattr(scenario, "judge", None)
        if judge is not None and judge.baseline == "chosen" and judge.prompts is None \
                and opened[0].format.kind != "preference":
            raise DataSourceError(
                f"{_where(scenario, 'data.validation')}: {val.label} has no chosen column, "
                "which judge.baseline chosen compares against"
            )
    opened += [open_source(scenario, w) for w in which if w != "validation"]
    first = opened[0]
    wanted = first.format.conversational if declared == "auto" else declared == "conversational"
    for source in opened:
        fmt = source.format
        if fmt.conversational == wanted:
            continue
        if declared == "auto":
            because = (f"but {first.key} ({first.label}, column {first.format.main!r}) holds "
                       f"{_held(first.format)}: a scenario's data is all conversational or all plain")
        else:
            because = f"but data.format is {declared}: expected {'message lists' if wanted else 'strings'}"
        raise DataSourceError(
            f"{_where(scenario, source.key)}: {source.label}: column {fmt.main!r} holds "
            f"{_held(fmt)} ({fmt}), {because}. Set data.format to match (or auto), or convert the data"
        )
    return "conversational" if wanted else "plain"


def scenario_format(scenario: Scenario) -> str:
    """The format evaluation renders prompts in: `data.format`, or the validation set's
    when `auto`."""
    if scenario.data.format != "auto":
        return scenario.data.format
    return "conversational" if open_source(scenario, "validation").format.conversational else "plain"
