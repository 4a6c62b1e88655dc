"""The Optuna study of a sweep: its sampler, its name, and opening it.

The study is opened (created, or loaded when it exists) before Ray Tune's OptunaSearch
loads it by name, so the warm start (raydaa.sweep.warm_start) is in it before the first
suggestion. One study per (scenario, method, setup, space kind, objective): a study's
directions and its parameters' distributions are fixed by its first trials, and mixing a
categorical β with a log-uniform one, or a single objective with two, would leave the
sampler nothing consistent to learn from.
"""

from __future__ import annotations

import optuna

from raydaa.config.objective import Objective
from raydaa.config.optuna_space import SAMPLERS


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler `--sampler` names, seeded with `--seed`. Constraints are not given to
    the sampler: each trial carries its own (Trial.set_constraint, Optuna >= 5's way;
    `constraints_func` is deprecated there), which both samplers read."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"--sampler {name!r}: expected one of {list(SAMPLERS)}")


def study_name(scenario: str, method: str, setup: str, space_kind: str, objective: Objective) -> str:
    """`<scenario>-<method>-<setup>` for the default (grid space, quality), then
    `-continuous` and the objective (`-pareto`, `-quality-at-kl0.5`) when they differ."""
    name = f"{scenario}-{method}-{setup}"
    if space_kind != "grid":
        name += f"-{space_kind}"
    return name + objective.study_suffix


def directions(objective: Objective) -> list[optuna.study.StudyDirection]:
    modes = objective.mode if isinstance(objective.mode, list) else [objective.mode]
    return [
        optuna.study.StudyDirection.MAXIMIZE if m == "max" else optuna.study.StudyDirection.MINIMIZE
        for m in modes
    ]


def open_study(
    storage: optuna.storages.BaseStorage | str,
    name: str,
    objective: Objective,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """The study `name` in `storage`, created with the objective's directions when new.
    An existing study with other directions is refused (Optuna would load it silently)."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),  # as OptunaSearch's own: Tune's scheduler prunes
        directions=directions(objective),
        load_if_exists=True,
    )
    if study.directions != directions(objective):
        found = [d.name.lower() for d in study.directions]
        raise ValueError(
            f"Optuna study {name!r} exists with directions {found}, not those of --objective "
            f"{objective.label}: use another --optuna-storage, or the objective it was made for"
        )
    return study

