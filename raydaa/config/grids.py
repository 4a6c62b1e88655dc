"""The keys and values of a grid override: a `scenarios.<name>` block of a method file, or
a scenario YAML's own `grids.<method>` block. Each value is checked here, so a bad grid in
a scenario file fails when the scenario loads, naming the file and the key."""

from __future__ import annotations

import math
from typing import Any

from raydaa.core.methods import METHODS, NORMALIZATIONS

INITS = ("sft", "base")
"""Policy and reference at the start: the scenario's SFT checkpoint, or the base model."""
SPACE_KEYS = ("betas", "lrs", "lambdas", "sft_weight", "gamma_beta_ratio", "epochs",
              "normalization", "init", "description")
"""Keys a setup or an override block may set."""
OVERRIDE_KEYS = (*SPACE_KEYS, "extra_betas")
"""Keys of an override block: the space's keys, and `extra_betas`, which extends β."""
SETUPS = "setups"
"""Under `grids.<method>`: the single-stage setups' own blocks (`setups.<setup>: {...}`)."""


def check_grids(grids: Any) -> dict[str, dict[str, Any]]:
    """A scenario's `grids:` ({method: override block, with an optional `setups:` mapping of
    setup -> override block}), checked; None is no grids. ValueError names the key."""
    if grids is None:
        return {}
    if not isinstance(grids, dict):
        raise ValueError(f"grids: expected a mapping of method -> grid, got {grids!r}")
    for method, block in grids.items():
        if method not in METHODS:
            raise ValueError(f"grids: unknown method {method!r}; valid: {list(METHODS)}")
        check_block(block, f"grids.{method}", (*OVERRIDE_KEYS, SETUPS))
        setups = block.get(SETUPS)
        if setups is None:
            continue
        if not isinstance(setups, dict):
            raise ValueError(f"grids.{method}.{SETUPS}: expected a mapping of setup -> grid")
        for setup, override in setups.items():
            if setup == "two_stage":
                raise ValueError(
                    f"grids.{method}.{SETUPS}.two_stage: the two-stage grid is grids.{method} itself"
                )
            check_block(override, f"grids.{method}.{SETUPS}.{setup}", OVERRIDE_KEYS)
    return grids


def check_block(block: Any, where: str, valid: tuple[str, ...]) -> None:
    """An override block: a mapping of known keys whose values have the right types."""
    if not isinstance(block, dict):
        raise ValueError(f"{where}: expected a mapping, got {block!r}")
    unknown = sorted(set(block) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    for key, value in block.items():
        name = f"{where}.{key}"
        if key in ("betas", "lrs", "lambdas", "extra_betas"):
            numbers(name, value, positive=True)
        elif key == "epochs":
            integers(name, value)
        elif key == "sft_weight" or (key == "gamma_beta_ratio" and value is not None):
            number(name, value)
        elif key == "normalization" and value not in NORMALIZATIONS:
            raise ValueError(f"{name}: unknown {value!r}; valid: {list(NORMALIZATIONS)}")
        elif key == "init" and value not in INITS:
            raise ValueError(f"{name}: unknown {value!r}; valid: {list(INITS)}")
        elif key == "description" and not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")


def number(name: str, value: Any) -> float:
    """A finite float; numeric strings are accepted (YAML 1.1 reads `3e-7` as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return result


def numbers(name: str, values: Any, *, positive: bool) -> list[float]:
    """A sorted, non-empty list of distinct finite floats (> 0 when `positive`)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name}: expected a non-empty list, got {values!r}")
    result = [number(name, v) for v in values]
    if positive and any(v <= 0 for v in result):
        raise ValueError(f"{name}: every value must be > 0, got {result}")
    no_duplicates(name, result)
    return sorted(result)


def integers(name: str, values: Any) -> list[int]:
    """A sorted, non-empty list of distinct integers >= 1."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name}: expected a non-empty list, got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name}: expected integers >= 1, got {list(values)}")
    no_duplicates(name, values)
    return sorted(values)


def no_duplicates(name: str, values: list) -> None:
    """No value twice (floats compared with a relative tolerance of 1e-9)."""
    repeated = sorted({v for v in values if sum(same(v, w) for w in values) > 1})
    if repeated:
        raise ValueError(f"{name}: repeated value(s) {repeated}")


def same(a: Any, b: Any) -> bool:
    """Equal, floats with a relative tolerance of 1e-9."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b
