"""What `raydaa data check` does once its arguments are parsed (raydaa/cli/data.py): the
reports of a configured scenario's data, or of a file / dataset / built-in scenario name,
printed with their verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydaa.data.sources import resolve_source
from raydaa.data.tokenize import load_tokenizer
from raydaa.data.validation import DEFAULT_THRESHOLD, ValidationReport, check_data, print_reports

if TYPE_CHECKING:
    from raydaa.config.scenario import Scenario


def scenario_reports(scenario: Scenario) -> list[ValidationReport]:
    """One report per dataset of the scenario (SFT, preference, validation), read and
    tokenized as its stages do, with its max_length."""
    tokenizer = load_tokenizer(scenario)
    reports = []
    for which in ("sft", "preference", "validation"):
        split = getattr(scenario.data, f"{which}_split")
        reports.append(
            check_data(
                resolve_source(getattr(scenario.data, which), split),
                split=split,
                tokenizer=tokenizer,
                max_length=scenario.max_length,
                name=f"{scenario.name}:{which}",
            )
        )
    return reports


def source_reports(path_or_scenario: str, *, split: str = "train", tokenizer: Any = None,
                   max_length: int | None = None) -> list[ValidationReport]:
    """The reports of a built-in scenario (by name) or of one file / dataset; `tokenizer`
    (object or local path) turns on the prompt length check."""
    from raydaa.scenarios.assets import builtin_datasets

    built_in = builtin_datasets(path_or_scenario)
    if built_in is not None:  # a built-in scenario's name: all it builds, at its length
        from raydaa.config.scenario import load_scenario

        scenario = load_scenario(path_or_scenario)
        tokenizer = load_tokenizer(scenario)
        return [check_data(ds, tokenizer=tokenizer, max_length=scenario.max_length,
                           name=f"{path_or_scenario}:{split}") for split, ds in built_in.items()]
    if isinstance(tokenizer, str | Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    return [check_data(path_or_scenario, split=split, tokenizer=tokenizer, max_length=max_length)]


def data_check_main(path_or_scenario: str, threshold: float = DEFAULT_THRESHOLD, *, split: str = "train",
                    tokenizer: Any = None, max_length: int | None = None) -> int:
    """`raydaa data check`: print the report(s) of a built-in scenario or a file / dataset.

    `tokenizer` (object or local path) turns on the prompt length check. Returns 0 when
    every source is within `threshold`, 1 when one is above it, 2 when it cannot be read.
    """
    try:
        reports = source_reports(path_or_scenario, split=split, tokenizer=tokenizer, max_length=max_length)
    except (OSError, ValueError) as err:
        print(f"data check: cannot read {path_or_scenario}: {err}")
        return 2
    return print_reports(reports, threshold)
