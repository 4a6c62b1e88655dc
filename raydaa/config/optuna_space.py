"""Optuna distributions over a method's space: its grid's own values, or a continuous box.

    grid         a categorical over each searched key's values: Optuna samples exactly the
                 configurations `--mode grid` runs, so it can run out of new ones
                 (raydaa.sweep.no_repeat ends the sweep then)
    continuous   β and lr log-uniform between the grid's smallest and largest value, λ too
                 where the grid has several (the single-stage setups); epochs stays a
                 categorical. The bounds come from the grid, so every grid point, and every
                 store row of the grid, is a point of the box (a warm start fits in it).

A key the grid holds at one value is a one-value categorical in both kinds: there is
nothing to search. No Ray here; Optuna is imported when a space is built.
"""

from __future__ import annotations

from typing import Any

from raydaa.config.grids import same

SPACE_KINDS = ("grid", "continuous")
SAMPLERS = ("tpe", "gp")
"""tpe: Optuna's TPESampler (Ray's default too); gp: GPSampler, a Gaussian-process
Bayesian optimizer, sample-efficient where a trial costs GPU-hours and the space has a
few continuous keys (raydaa.sweep.optuna_study builds them)."""
LOG_UNIFORM_KEYS = ("beta", "lr", "lambda_")
"""Keys a continuous space samples on a log scale: the paper's grids for them are
geometric (β 0.001 ... 1, lr 3e-7 ... 1e-6), so a log scale spreads trials as they do."""


def distributions(searched: dict[str, list], kind: str = "grid") -> dict[str, Any]:
    """{key: Optuna distribution} for `searched` ({"beta": [...], "lr": [...], ...}, as
    MethodSpace.searched gives it) in the space `kind` (SPACE_KINDS)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if kind not in SPACE_KINDS:
        raise ValueError(f"space: unknown kind {kind!r}; expected one of {list(SPACE_KINDS)}")
    out: dict[str, Any] = {}
    for key, values in searched.items():
        if kind == "continuous" and key in LOG_UNIFORM_KEYS and len(set(values)) > 1:
            out[key] = FloatDistribution(float(min(values)), float(max(values)), log=True)
        else:
            out[key] = CategoricalDistribution(list(values))
    return out


def params_in(config: dict[str, Any], space: dict[str, Any]) -> dict[str, Any] | None:
    """`config`'s values of the space's keys as points of `space` (Optuna distributions),
    or None when a key is missing or a value lies outside. A categorical takes its own
    choice (a stored 1e-4 and the grid's 1e-4 compare with a 1e-9 relative tolerance, and
    the grid's spelling is kept); a float must lie within its bounds (a bound itself
    within the same tolerance, then clipped onto it)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    params: dict[str, Any] = {}
    for key, dist in space.items():
        value = config.get(key)
        if value is None:
            return None
        if isinstance(dist, CategoricalDistribution):
            choice = next((c for c in dist.choices if same(value, c)), None)
            if choice is None:
                return None
            params[key] = choice
        elif isinstance(dist, FloatDistribution):
            value = float(value)
            if same(value, dist.low) or same(value, dist.high):
                value = min(max(value, dist.low), dist.high)
            if not dist.low <= value <= dist.high:
                return None
            params[key] = value
        else:
            raise TypeError(f"{key}: {type(dist).__name__} is not a distribution raydaa builds")
    return params


def in_space(row: dict[str, Any], fixed: dict[str, Any], space: dict[str, Any]) -> bool:
    """Whether a store row (or config) is a point of the Optuna `space` whose other keys
    are `fixed` (MethodSpace.fixed()): the fixed keys equal, the searched ones inside."""
    return all(same(row.get(k), v) for k, v in fixed.items()) and params_in(row, space) is not None


def grid_size(space: dict[str, Any]) -> int | None:
    """Points of a space made of categoricals only (their product); None when any key is
    continuous (no end to new points)."""
    from optuna.distributions import CategoricalDistribution

    size = 1
    for dist in space.values():
        if not isinstance(dist, CategoricalDistribution):
            return None
        size *= len(set(dist.choices))
    return size
