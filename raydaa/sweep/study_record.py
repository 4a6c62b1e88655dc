"""A Tune trial's results, told to its Optuna trial so the study tells the report's story.

optuna-dashboard reads the study; without this it shows a value per trial and nothing
else. Each finished trial carries, as user attributes: `trial_name` (the readable name of
the trial, its Train run and its store row, raydaa.sweep.telemetry.trial_name),
`trial_id`, `status` and `error` as its store row has them (finished, failed, diverged,
or pruned with the step a Tune scheduler stopped it at), `kl`, `quality_low` and
`quality_high` (the quality's 95% interval). Non-finite numbers are stored as None (the
study's JSON has no NaN).

Its state:

    COMPLETE   finished with finite metrics: quality (pareto: quality and KL); with
               quality-at-kl:K also the constraint KL - K (feasible when <= 0)
    PRUNED     its last result is an intermediate one (status "running"): a Tune
               scheduler stopped it mid-training; or it ended with no result at all
    FAIL       failed, diverged, or a metric is NaN (Optuna refuses NaN values)

An intermediate result (status "running", a finite quality at a step:
raydaa.sweep.pruning.is_intermediate) goes to `trial.report(quality, step)`: the
dashboard's intermediate-values plot. Optuna keeps them for single-objective studies only.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from raydaa.config.objective import Objective
from raydaa.sweep.pruning import PRUNED, RUNNING, is_intermediate, stop_reason
from raydaa.sweep.telemetry import finite_number, trial_name

logger = logging.getLogger(__name__)

STORY_NUMBERS = ("kl", "quality_low", "quality_high")


def _config(result: dict[str, Any]) -> dict[str, Any]:
    """The trial's config from a Tune result: nested under "config", or flattened to
    "config/<key>" (what Tune hands searchers)."""
    if isinstance(result.get("config"), dict):
        return result["config"]
    return {k.removeprefix("config/"): v for k, v in result.items() if k.startswith("config/")}


def story(
    trial_id: str, result: dict[str, Any] | None, error: bool, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The user attributes of a trial that ended with `result` (None: no result); its
    name comes from the result's config, else from `config` (what was suggested)."""
    result = result or {}
    try:
        name = trial_name(_config(result) or config or {}, trial_id)
    except (KeyError, TypeError, ValueError):  # a config without method, β or lr
        name = trial_id
    status = result.get("status") or ("failed" if error else "stopped")
    reason = result.get("error") or ("Tune reported the trial as errored" if error else "")
    if status == RUNNING:  # its last result is an intermediate one: stopped mid-training
        status = PRUNED
        reason = stop_reason(None, result) if is_intermediate(result) else "stopped mid-training"
    attrs = {"trial_name": name, "trial_id": trial_id, "status": str(status), "error": str(reason)}
    for key in STORY_NUMBERS:
        value = result.get(key)
        attrs[key] = float(value) if finite_number(value) else None
    return attrs


def report_intermediate(study: optuna.Study, trial: optuna.Trial, result: dict[str, Any]) -> bool:
    """`trial.report(quality, step)` for an intermediate result of a single-objective
    study; True when it was reported."""
    if not is_intermediate(result) or len(study.directions) > 1:
        return False
    trial.report(float(result["quality"]), int(result["step"]))
    return True


def outcome(
    result: dict[str, Any] | None, error: bool, metrics: list[str]
) -> tuple[TrialState, list[float] | None]:
    """The state and values a trial's last result is told with."""
    if not result:
        return (TrialState.FAIL if error else TrialState.PRUNED), None
    if result.get("status") in (RUNNING, PRUNED):
        return TrialState.PRUNED, None
    values = [result.get(m) for m in metrics]
    if error or result.get("status") in ("failed", "diverged") or not all(map(finite_number, values)):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, [float(v) for v in values]


def worst_violation(study: optuna.Study, key: str = "kl") -> float:
    """The largest constraint value `key` among the study's complete trials (0 if none)."""
    values = [
        t.constraints[key] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if key in t.constraints and math.isfinite(t.constraints[key])
    ]  # fmt: skip
    return max(values, default=0.0)


def record(
    study: optuna.Study,
    trial: optuna.Trial,
    trial_id: str,
    result: dict[str, Any] | None,
    error: bool,
    objective: Objective,
    config: dict[str, Any] | None = None,
) -> TrialState:
    """Tell `trial` how its Tune trial `trial_id` ended: user attributes, the last
    intermediate value (a trial stopped mid-training never had it reported: Tune skips
    the searcher's on_trial_result for the result it stops on), the KL constraint, and
    its state and values. Never raises: a study that refuses is logged, as Ray does."""
    metrics = objective.metric if isinstance(objective.metric, list) else [objective.metric]
    state, values = outcome(result, error, metrics)
    try:
        for key, value in story(trial_id, result, error, config).items():
            trial.set_user_attr(key, value)
        if state == TrialState.PRUNED and result:
            with warnings.catch_warnings():  # Optuna warns on a step already reported
                warnings.simplefilter("ignore")
                report_intermediate(study, trial, result)
        if state == TrialState.COMPLETE and objective.kl_budget is not None:
            kl = result.get("kl")
            trial.set_constraint("kl", objective.kl_constraint(kl if finite_number(kl) else None,
                                                               worst_violation(study)))  # fmt: skip
        study.tell(trial, values, state=state)
    except Exception as err:  # the sweep goes on; the store keeps the row
        logger.warning("Optuna study %s: trial %s not recorded: %s", study.study_name, trial_id, err)
    return state
