"""What `raydaa data check` does once its arguments are parsed (raydaa/cli/data.py): the
reports of a configured scenario's data, or of a file / dataset / built-in scenario name,
printed with their verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydaa.data.preflight import preflight
from raydaa.data.tokenize import load_tokenizer
from raydaa.data.validation import DEFAULT_THRESHOLD, ValidationReport, check_data, print_reports

if TYPE_CHECKING:
    from raydaa.config.scenario import Scenario


def scenario_reports(scenario: Scenario) -> list[ValidationReport]:
    """One report per dataset of the scenario (SFT, preference, validation), read and
    tokenized as its stages do, with its max_length, after the preflight checks (sources,
    formats, validation prompts: raydaa.data.preflight), which raise DataSourceError."""
    data_format = preflight(scenario)
    tokenizer = load_tokenizer(scenario)
    reports = []
    for which, kind in (("sft", "sft"), ("preference", "preference"), ("validation", None)):
        source = scenario.data.source(which)
        reports.append(
            check_data(
                source,
                kind=kind,
                split=source.split,
                tokenizer=tokenizer,
                max_length=scenario.max_length,
                name=f"{scenario.name}:{which}",
            )
        )
    print(f"data check: scenario {scenario.name}: data.format {scenario.data.format}"
          f"{f' (inferred: {data_format})' if scenario.data.format == 'auto' else ''}")
    return reports


def scenario_check_main(scenario: Scenario, threshold: float = DEFAULT_THRESHOLD) -> int:
    """`raydaa data check --scenario`: 0 when every source is within `threshold`, 1 when
    one is above it, 2 when a source cannot be read or used (the message says why)."""
    try:
        reports = scenario_reports(scenario)
    except (OSError, ValueError) as err:
        print(f"data check: {err}")
        return 2
    return print_reports(reports, threshold)


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
