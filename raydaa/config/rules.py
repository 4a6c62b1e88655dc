"""Rules the recipe, resources and watchdog sections share with
raydaa.train.settings.TrainSettings, which is built from them but also from plain dicts
(Tune configs, benchmarks, tests) and so checks its fields with these same functions.
A keyword argument picks the wording: the scenario's keys, or TrainSettings' fields."""

from __future__ import annotations

import math
import numbers
from typing import Any

ZERO_STAGES = (0, 1, 2, 3)
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def check_whole(values: dict[str, Any]) -> None:
    """Each value is a whole number: YAML's `2`, not `2.0`, `true`, `.nan` or `"2"` (which
    would pass a `< 1` test, or fail deep inside a run). The error names the key."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be a whole number, got {value!r}")


def check_finite(values: dict[str, Any], *, positive: bool = False) -> dict[str, float]:
    """Each value is a finite number (> 0 with `positive`), returned as floats: NaN slips
    through a `x < 0` test and inf through every bound, so both are refused by name.
    Numeric strings are accepted (YAML 1.1 reads `3e-7`, without a dot, as a string)."""
    checked = {}
    for name, value in values.items():
        number = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number) or (positive and not number > 0):
            wording = "a finite number > 0" if positive else "a finite number"
            raise ValueError(f"{name} must be {wording}, got {value!r}")
        checked[name] = float(number)
    return checked


def check_flags(values: dict[str, Any]) -> None:
    """Each value is true or false (YAML's `"no"` or `1` would read as truthy)."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


def check_counts(counts: dict[str, Any], *, each: bool = False) -> None:
    """Counts (epochs, steps, batch sizes, workers, CPUs) must be >= 1. The error names all
    of `counts` (a scenario section), or with `each` the first one below 1 and its value."""
    if each:
        for name, value in counts.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
    elif any(value < 1 for value in counts.values()):
        *names, last = counts
        raise ValueError(f"{', '.join(names)} and {last} must be >= 1")


def check_batch_split(
    global_batch_size: int, micro_batch_size: int, num_workers: int, *, stage: str | None = None
) -> None:
    """A global batch is whole micro batches on every worker: a multiple of
    micro_batch_size x num_workers. `stage` (sft, align): the error names its scenario keys."""
    per_step = micro_batch_size * num_workers
    if not global_batch_size % per_step:
        return
    if stage is not None:
        raise ValueError(
            f"{stage}.global_batch_size ({global_batch_size}) is not a multiple of "
            f"{stage}.micro_batch_size x resources.num_workers "
            f"({micro_batch_size} x {num_workers})"
        )
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by "
        f"micro_batch_size*num_workers={micro_batch_size}*{num_workers}="
        f"{per_step}; pick a global batch that is a multiple of {per_step}"
    )


def check_warmup_ratio(ratio: float) -> None:
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}")


def check_zero_stage(stage: int) -> None:
    if stage not in ZERO_STAGES:
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {stage}")


def check_attn_implementation(name: str) -> None:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, got {name!r}"
        )


def check_checkpoint_every(steps: int | None, *, none: str = "null") -> None:
    """Steps between resumable checkpoints: >= 1, or `none` (only the final checkpoint)."""
    if steps is not None and steps < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or {none}, got {steps}")


def check_watchdog_timeouts(
    startup_timeout_s: float, stall_timeout_s: float, *, section: str | None = None
) -> None:
    """Both watchdog bounds > 0. `section` (watchdog): the error names its scenario keys."""
    if startup_timeout_s > 0 and stall_timeout_s > 0:
        return
    if section is None:
        raise ValueError("startup_timeout_s and stall_timeout_s must be > 0")
    raise ValueError(
        f"{section}.startup_timeout_s and {section}.stall_timeout_s must be > 0, got "
        f"{startup_timeout_s} and {stall_timeout_s}"
    )
