"""No configuration twice in one Optuna study.

On a small categorical grid a sampler proposes points it has already tried (TPE proposed
the same configuration twice in 4 trials on a 2×2 grid). A trial costs GPU-hours and its
twin's result is known, or on its way, so each suggestion is checked against the study's
trials (complete, running, failed or pruned, with the same params) before it runs:

- a repeat of a complete trial is told with that trial's values (and constraints), of a
  running, failed or pruned one as FAIL (samplers skip failed trials, so no made-up value
  misleads them); either way it carries the user attribute `duplicate_of` (the twin's
  number), `status` "duplicate", and never runs;
- the sampler is then asked again, MAX_ASKS times in all; when every answer was a repeat,
  an untried grid point drawn at random is enqueued and taken (Optuna's enqueue_trial);
- when the study holds every point of the grid, the sweep is done (the searcher returns
  Searcher.FINISHED and says why).

A continuous space has no end of points and essentially never repeats; only exact
equality counts there.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from raydaa.config.optuna_space import grid_size

TRIED_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.PRUNED)
DUPLICATE_OF = "duplicate_of"
MAX_ASKS = 5
"""Sampler answers per suggestion before an untried point is drawn instead: each repeat
leaves a told trial in the study, so a few, not many."""


def point(params: dict[str, Any], keys: list[str]) -> tuple:
    return tuple(params.get(k) for k in keys)


def _tries(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t for t in study.get_trials(deepcopy=False, states=TRIED_STATES)
        if DUPLICATE_OF not in t.user_attrs
    ]  # fmt: skip


def tried(study: optuna.Study, keys: list[str]) -> set[tuple]:
    """The configurations the study has tried, each the tuple of its `keys`' values."""
    return {point(t.params, keys) for t in _tries(study)}


def twin_of(study: optuna.Study, number: int, params: dict[str, Any]) -> FrozenTrial | None:
    """An earlier try of `params` other than trial `number`: a complete one first (its
    values are known), else the first in number order; None when the params are new."""
    keys = sorted(params)
    twins = [
        t for t in _tries(study)
        if t.number != number and point(t.params, keys) == point(params, keys)
    ]  # fmt: skip
    complete = [t for t in twins if t.state == TrialState.COMPLETE]
    return (complete or twins or [None])[0]


def tell_duplicate(study: optuna.Study, trial: optuna.Trial, twin: FrozenTrial) -> None:
    """Finish `trial`, a repeat of `twin`, without running it (see the module docstring)."""
    trial.set_user_attr(DUPLICATE_OF, twin.number)
    trial.set_user_attr("status", "duplicate")
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in sorted(trial.params.items()))
    print(f"optuna: trial {trial.number} ({shown}) repeats trial {twin.number}: "
          "recorded with its result, not trained", flush=True)
    if twin.state == TrialState.COMPLETE:
        for key, value in twin.constraints.items():  # a constrained sampler needs them all
            trial.set_constraint(key, value)
        study.tell(trial, twin.values)
    else:
        study.tell(trial, state=TrialState.FAIL)


def untried_points(study: optuna.Study, space: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid points of an all-categorical `space` the study has not tried, in grid
    order; [] for a space with a continuous key (no list of its points)."""
    if grid_size(space) is None:
        return []
    keys = list(space)
    choices = [list(dict.fromkeys(space[k].choices)) for k in keys]
    done = tried(study, keys)
    return [dict(zip(keys, p, strict=True)) for p in itertools.product(*choices) if p not in done]


def exhausted(study: optuna.Study, space: dict[str, Any]) -> bool:
    """Whether the study has tried every point of an all-categorical `space`."""
    return grid_size(space) is not None and not untried_points(study, space)


def enqueue_untried(study: optuna.Study, space: dict[str, Any], rng: random.Random) -> bool:
    """Enqueue one untried grid point, drawn with `rng`; False when there is none."""
    points = untried_points(study, space)
    if not points:
        return False
    study.enqueue_trial(rng.choice(points), user_attrs={"drawn": "untried grid point"})
    return True

