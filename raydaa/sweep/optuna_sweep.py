"""The Optuna side of `raydaa search --mode optuna`: study, warm start and searcher.

    --space grid|continuous      the distributions (raydaa.config.optuna_space)
    --sampler tpe|gp             Optuna's TPESampler or GPSampler, seeded with --seed
    --objective quality|quality-at-kl:K|pareto   (raydaa.config.objective)
    --no-warm-start              skip adding the store's rows to a new study

run_search (raydaa.sweep.search) builds the Tuner around `searcher(...)`.
"""

from __future__ import annotations

from typing import Any

import optuna

from raydaa.config.objective import Objective, parse_objective
from raydaa.sweep.no_repeat import exhausted
from raydaa.sweep.optuna_searcher import StudyRecordingOptunaSearch
from raydaa.sweep.optuna_study import make_sampler, open_study, study_name
from raydaa.sweep.warm_start import warm_start


def objective_of(settings) -> Objective:
    """The sweep's objective: `settings.objective` (text or Objective); the older
    `multi_objective=True` means pareto."""
    objective = settings.objective
    if isinstance(objective, str):
        objective = parse_objective(objective)
    if settings.multi_objective and objective.kind != "pareto":
        if objective.kind != "quality":
            raise ValueError(f"--multi-objective is --objective pareto, not {objective.label}")
        objective = Objective("pareto")
    return objective


def sweep_study_name(settings, scenario: str) -> str:
    return study_name(scenario, settings.method, settings.setup, settings.space, objective_of(settings))


def num_samples(settings, space) -> int:
    """Trials asked of Tune: --num-trials, default half the grid."""
    return settings.num_trials or max(1, space.size // 2)


def searcher(settings, space, scenario: str, url: str, rows: list[dict[str, Any]],
             reference: str | None) -> StudyRecordingOptunaSearch:
    """Open (or create) the study, warm-start it from `rows` (the method's store rows)
    unless settings.warm_start is off, and return the searcher on it."""
    objective = objective_of(settings)
    distributions = space.optuna_space(settings.space)
    sampler = make_sampler(settings.sampler, settings.seed)
    name = sweep_study_name(settings, scenario)
    storage = optuna.storages.RDBStorage(url)
    study = open_study(storage, name, objective, sampler)
    if settings.warm_start:
        added = warm_start(study, rows, distributions, space.fixed(), objective, reference)
        print(f"warm start: {added} results-store row(s) entered Optuna study {name} "
              f"({len(study.trials)} trial(s) in it now)", flush=True)  # fmt: skip
    return StudyRecordingOptunaSearch(
        distributions, objective=objective, fixed=space.fixed(), study_name=name,
        storage=storage, sampler=sampler, seed=settings.seed,
    )  # fmt: skip


def trials_expected(settings, space, url: str | None, scenario: str, created: int) -> int:
    """Trials the sweep should have ended: --num-trials, or fewer when the grid ran out
    of untried configurations first (then every trial Tune created)."""
    wanted = num_samples(settings, space)
    if url is None or created >= wanted:
        return wanted
    study = optuna.load_study(study_name=sweep_study_name(settings, scenario), storage=url)
    return created if exhausted(study, space.optuna_space(settings.space)) else wanted
