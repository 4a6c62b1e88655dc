"""Warm start: store rows of earlier sweeps enter a new Optuna study as complete trials.

A configuration the results store already measured (a grid sweep, an earlier Optuna
sweep, `raydaa align` runs) is knowledge the sampler should start from, and a trial it
need not run again (raydaa.sweep.no_repeat treats it as tried). The rows taken: the same
scenario (the store is per scenario), method and fixed keys (sft_weight, γ/β,
normalization: the setup), the same reference policy when the row names one, status
finished with a finite quality (pareto: a finite KL too), params inside the space (every
grid row fits a continuous space: its bounds are the grid's), and each configuration's
search row only (seed replicates would count one configuration several times:
raydaa.config.search_space.search_rows).

They go in with `study.add_trial(optuna.trial.create_trial(...))` rather than
OptunaSearch's points_to_evaluate / evaluated_rewards: that path takes one value per
point (no KL for a pareto study, no constraint, no user attributes) and adds the points
again each time a searcher is built on a stored study. Here each row is added once: a row
whose trial id, or whose configuration, the study already holds is skipped, so a resumed
or repeated sweep adds nothing twice.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from raydaa.config.objective import Objective
from raydaa.config.optuna_space import in_space, params_in
from raydaa.config.search_space import search_rows
from raydaa.sweep.no_repeat import point, tried
from raydaa.sweep.study_record import STORY_NUMBERS, worst_violation
from raydaa.sweep.telemetry import finite_number, trial_name

WARM_START = "warm_start"
"""User attribute (True) of a trial that came from the store, not from this study."""


def _same_reference(row: dict[str, Any], reference: str | None) -> bool:
    return reference is None or not row.get("reference_path") or row["reference_path"] == reference


def usable_rows(rows: list[dict[str, Any]], space: dict[str, Any], fixed: dict[str, Any],
                objective: Objective, reference: str | None = None) -> list[dict[str, Any]]:
    """The rows that may warm-start a study of `space` (Optuna distributions) whose other
    keys are `fixed`."""
    keep = [r for r in rows if in_space(r, fixed, space) and _same_reference(r, reference)]
    keep = [r for r in search_rows(keep) if r.get("status") == "finished" and finite_number(r.get("quality"))]
    if objective.kind == "pareto":
        keep = [r for r in keep if finite_number(r.get("kl"))]
    return keep


def _user_attrs(row: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in row.items() if k != "seed"}  # a search row: no replicate tag
    attrs = {
        "trial_name": trial_name(config, str(row["trial_id"])),
        "trial_id": str(row["trial_id"]),
        "status": str(row["status"]),
        "error": str(row.get("error") or ""),
        WARM_START: True,
    }
    return attrs | {k: float(row[k]) if finite_number(row.get(k)) else None for k in STORY_NUMBERS}


def warm_start(
    study: optuna.Study,
    rows: list[dict[str, Any]],
    space: dict[str, Any],
    fixed: dict[str, Any],
    objective: Objective,
    reference: str | None = None,
) -> int:
    """Add `rows` (store rows) the study lacks as complete trials of `space` (Optuna
    distributions); returns how many were added."""
    keys = list(space)
    held_ids = {t.user_attrs.get("trial_id") for t in study.get_trials(deepcopy=False)}
    held = tried(study, keys)
    worst = worst_violation(study)
    added = 0
    for row in usable_rows(rows, space, fixed, objective, reference):
        params = params_in(row, space)
        if params is None or str(row["trial_id"]) in held_ids or point(params, keys) in held:
            continue
        values = [row["quality"], row["kl"]] if objective.kind == "pareto" else [row["quality"]]
        constraints = None
        if objective.kl_budget is not None:
            kl = row.get("kl") if finite_number(row.get("kl")) else None
            constraints = {"kl": objective.kl_constraint(kl, worst)}
            worst = max(worst, constraints["kl"])
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                values=[float(v) for v in values],
                params=params,
                distributions=space,
                user_attrs=_user_attrs(row),
                constraints=constraints,
            )
        )
        held.add(point(params, keys))
        held_ids.add(str(row["trial_id"]))
        added += 1
    return added
