"""`raydaa search --scheduler asha|hyperband|none`: Ray Tune schedulers that stop a sweep's
weak trials early, on the quality of their intermediate evaluations (the scenario's
`intermediate_eval`), with the training step as their clock (`time_attr` "step", max_t
the longest trial's steps) and the scenario's `early_stopping` settings.

    asha       ASHAScheduler (asynchronous successive halving): at each rung (step
               grace_period x eval_every, then x reduction_factor) a trial goes on only
               if its quality is in the top 1/η of the qualities recorded there so far;
               trials never wait for each other.
    hyperband  HyperBandScheduler (synchronous): a bracket's trials are paused at each
               milestone until all have reached it, then the best 1/η go on. A paused
               trial's run stops and resumes from its last checkpoint, so the scenario
               must checkpoint at its evaluation steps (resources.checkpoint_every).

What a stopped trial leaves: raydaa.sweep.pruning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SCHEDULERS = ("none", "asha", "hyperband")
TIME_ATTR, METRIC, MODE = "step", "quality", "max"


class SchedulerError(ValueError):
    """`--scheduler` cannot run on this scenario; the message names the keys to change."""


def scheduler_problem(kind: str, scenario) -> str | None:
    """Why `raydaa search --scheduler kind` cannot run on `scenario` (checked when the
    command starts, before any compute), or None."""
    if kind not in SCHEDULERS:
        return f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {kind!r}"
    if kind == "none":
        return None
    every = scenario.intermediate_eval.eval_every
    if every is None:
        return (
            f"--scheduler {kind} stops trials on their intermediate evaluations, but scenario "
            f"{scenario.name} has none: set intermediate_eval.eval_every (optimizer steps "
            "between two evaluations, e.g. `intermediate_eval: {eval_every: 8}`) in its YAML, "
            "or use --scheduler none"
        )
    checkpoint_every = scenario.resources.checkpoint_every
    if kind == "hyperband" and (checkpoint_every is None or every % checkpoint_every):
        return (
            "--scheduler hyperband pauses trials at its milestones and resumes them from their "
            f"last checkpoint: scenario {scenario.name} needs resources.checkpoint_every set to "
            f"intermediate_eval.eval_every ({every}) or a divisor of it (it is "
            f"{checkpoint_every}), or a paused trial would train again from its start"
        )
    return None


def longest_run(steps_of, epochs: Iterable[int | None]) -> int:
    """The scheduler's max_t: the most steps any trial of the sweep trains
    (`steps_of(epochs)` for each epochs value its configurations use)."""
    return max(steps_of(e) for e in (list(epochs) or [None]))


def build_scheduler(kind: str, scenario, max_steps: int):
    """The Tune scheduler for `--scheduler kind` (None for none). `max_steps`: the longest
    trial's optimizer steps. Raises SchedulerError when no trial could be stopped before
    its end."""
    problem = scheduler_problem(kind, scenario)
    if problem:
        raise SchedulerError(problem)
    if kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    every = scenario.intermediate_eval.eval_every
    factor = scenario.early_stopping.reduction_factor
    if kind == "asha":
        grace = scenario.early_stopping.grace_period * every
        if grace >= max_steps:
            raise SchedulerError(
                f"early_stopping.grace_period ({scenario.early_stopping.grace_period}) x "
                f"intermediate_eval.eval_every ({every}) = step {grace}, but the trials of "
                f"scenario {scenario.name} train {max_steps} steps (their last step has no "
                "intermediate evaluation): ASHA could stop none; lower one of them"
            )
        return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max_steps,
                             grace_period=grace, reduction_factor=factor)
    if every >= max_steps:
        raise SchedulerError(
            f"intermediate_eval.eval_every ({every}) is not below the {max_steps} steps the "
            f"trials of scenario {scenario.name} train: no intermediate evaluation to stop on"
        )
    return HyperBandScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max_steps,
                              reduction_factor=factor)


def hyperband_first_bracket(max_steps: int, reduction_factor: float) -> int:
    """Trials in Ray's first HyperBand bracket, which runs each to max_t and stops none:
    round(log_η max_t) + 1 (HyperBandScheduler's s_max + 1)."""
    return int(round(math.log(max_steps) / math.log(reduction_factor))) + 1


def trials_at_once(kind: str, capacity: int, trials: int, *, drivers_hold_resources: bool) -> int:
    """Tune's max_concurrent_trials when the user set none. HyperBand fills its brackets
    with the trials that exist: capped at what the cluster runs at once, every trial lands
    in its first bracket, which stops none (measured on tiny: docs/early-stopping.md). So
    under hyperband every trial is created at once when each trial's driver holds its
    training's resources (the ones that do not fit wait as PENDING); when drivers hold
    none (Ray Train runs), the extra trials' runs would wait for workers under their
    start-up watchdog instead, so the cap stays."""
    if kind == "hyperband" and drivers_hold_resources:
        return max(capacity, trials)
    return capacity


def hyperband_warning(trials: int, at_once: int, max_steps: int, reduction_factor: float) -> str | None:
    """What to tell a user whose hyperband sweep cannot stop a trial, or None."""
    first = hyperband_first_bracket(max_steps, reduction_factor)
    if min(trials, at_once) > first + 1:
        return None
    return (f"note: HyperBand's first bracket ({first} trials at max_t {max_steps} steps, "
            f"η {reduction_factor:g}) runs its trials to the end, and a second bracket needs "
            f"2 or more trials to stop one; with {trials} trials, {at_once} created at once, "
            "this sweep will likely stop none (more trials, or --scheduler asha)")
