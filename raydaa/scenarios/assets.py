"""The built-in scenarios' assets, one function per asset, for the stages, `raydaa data
check` and the judges: each returns the asset when the scenario (or source name) is a
built-in one, and None otherwise, so that callers fall back to the hub / local files
without naming `tiny` or `rehearsal`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raydaa.scenarios.rehearsal import (
    REWARD_MODEL,
    build_rehearsal_model,
    build_rehearsal_tokenizer,
    reward_model_path,
)
from raydaa.scenarios.rehearsal_data import rehearsal_datasets
from raydaa.scenarios.tiny import (
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_datasets,
)

if TYPE_CHECKING:
    import datasets

    from raydaa.config.scenario import Scenario


def builtin_tokenizer(scenario: Scenario) -> Any | None:
    """The tokenizer of a scenario whose model is built in code (model.builder), or None.
    rehearsal's, like Llama 3's, has no pad token: it gets EOS as pad, as `load_tokenizer`
    gives a hub tokenizer without one."""
    if scenario.model.builder == "tiny":
        return build_tiny_tokenizer()
    if scenario.model.builder == "rehearsal":
        tokenizer = build_rehearsal_tokenizer()
        tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return None


def builtin_model(scenario: Scenario) -> Any | None:
    """The stage-0 model of a scenario whose model is built in code: its random init
    (seeded by the scenario's seed), or None."""
    if scenario.model.builder == "tiny":
        return build_tiny_model(seed=scenario.seed)
    if scenario.model.builder == "rehearsal":
        return build_rehearsal_model(seed=scenario.seed)
    return None


def builtin_dataset(source: str) -> datasets.Dataset | None:
    """`<scenario>:<split>` of a built-in scenario (`tiny:sft_train`, `rehearsal:pref_val`)
    -> that dataset; None for any other source (a public dataset name or a local path).
    Raises ValueError for an unknown split of a built-in scenario."""
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
    if name == "tiny":
        return tiny_datasets()
    if name == "rehearsal":
        return rehearsal_datasets()
    return None


def builtin_judge_model(name: str) -> str | None:
    """`<scenario>:<asset>` naming a built-in judge model (`rehearsal:reward_model`, what
    rehearsal's `judge.model` says) -> a local checkpoint folder of it, built and saved on
    this machine on first use; None for any other name (a path, a hub id, a URI). Raises
    ValueError for an unknown asset of a built-in scenario."""
    scenario, colon, asset = name.partition(":")
    if not colon or scenario not in ("tiny", "rehearsal"):
        return None
    if scenario == "rehearsal" and asset == REWARD_MODEL:
        return reward_model_path()
    valid = [f"rehearsal:{REWARD_MODEL}"]
    raise ValueError(f"unknown built-in judge model {name!r}; valid: {valid}")
