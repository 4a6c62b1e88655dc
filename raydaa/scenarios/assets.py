"""The built-in scenarios' assets, one function per asset, for the stages and `raydaa data
check`: each returns the asset when the scenario (or source name) is a built-in one, and
None otherwise, so that callers fall back to the hub / local files without naming `tiny`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raydaa.scenarios.tiny import (
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_datasets,
)

if TYPE_CHECKING:
    import datasets

    from raydaa.config.scenario import Scenario


def builtin_tokenizer(scenario: Scenario) -> Any | None:
    """The tokenizer of a scenario whose model is built in code (model.builder), or None."""
    if scenario.model.builder == "tiny":
        return build_tiny_tokenizer()
    return None


def builtin_model(scenario: Scenario) -> Any | None:
    """The stage-0 model of a scenario whose model is built in code: tiny's random init
    (seeded by the scenario's seed), or None."""
    if scenario.model.builder == "tiny":
        return build_tiny_model(seed=scenario.seed)
    return None


def builtin_dataset(source: str) -> datasets.Dataset | None:
    """`tiny:<split>` -> that built-in dataset; None for any other source (a public
    dataset name or a local path). Raises ValueError for an unknown tiny split."""
    scenario, colon, name = source.partition(":")
    sets = builtin_datasets(scenario) if colon else None
    if sets is None:
        return None
    if name not in sets:
        raise ValueError(f"unknown {scenario} dataset {name!r}; valid: {sorted(sets)}")
    return sets[name]


def builtin_datasets(name: str) -> dict[str, datasets.Dataset] | None:
    """Every dataset a built-in scenario builds, by split name (`raydaa data check tiny`);
    None when `name` is not a built-in scenario."""
    return tiny_datasets() if name == "tiny" else None
