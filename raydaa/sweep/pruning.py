"""Pruned trials: a trial a Tune scheduler (ASHA, HyperBand) stopped before its run ended.

How one is told: Tune hands `on_trial_complete` the trial's last result. A trial that ran
to its end last reported the trial driver's final result (status finished, failed or
diverged); a stopped one last reported an intermediate evaluation forwarded from its
training run, whose status is "running" (the training loop's). Nothing else completes a
trial mid-training: a Ctrl-C stops trials without completing them, and no Tune stopper is
set. Its store row keeps that evaluation's metrics (quality and KL on the subset, the
step, the subset's size) and a reason naming the scheduler.
"""

from __future__ import annotations

import math
from typing import Any

RUNNING = "running"
"""The status of an intermediate result (the training loop's reports while it trains)."""
PRUNED = "pruned"
ENDED = ("finished", "failed", "diverged", PRUNED)
"""The statuses of a trial's store row: it ran to its end or was stopped."""


def is_intermediate(result: dict[str, Any] | None) -> bool:
    """A result of an intermediate evaluation: still training, with a finite quality at a
    step."""
    if not result or result.get("status") != RUNNING:
        return False
    quality, step = result.get("quality"), result.get("step")
    return finite_real(quality) and finite_real(step)


def stop_reason(scheduler: str | None, result: dict[str, Any]) -> str:
    """`stopped by asha at step 8 (quality 0.48 on 32 prompts)`."""
    who = scheduler or "the Tune scheduler"
    return (f"stopped by {who} at step {int(result['step'])} (quality {result['quality']:.3g} "
            f"on {result.get('eval_prompts', '?')} prompts)")


def pruned_fields(result: dict[str, Any], scheduler: str | None, workers: int) -> dict[str, Any]:
    """A pruned trial's row columns beyond the metrics its last result shares with a
    final one (quality, KL, tokens seen, peak memory): status, reason, where it was
    measured, the train loss and reward accuracy at that step, and the device time until
    then (Tune's wall-clock time of the trial x the run's workers). No checkpoint: the
    run was stopped before its export."""
    seconds = result.get("time_total_s")
    return {
        "status": PRUNED,
        "error": stop_reason(scheduler, result),
        "eval_step": int(result["step"]),
        "final_loss": result.get("loss"),
        "reward_accuracy": result.get("rewards/accuracy"),
        "diverged_step": None,
        "checkpoint_path": "",
        "device_seconds": seconds * workers if finite_real(seconds) else None,
    }


def has_ended(metrics: dict[str, Any] | None, stored_status: str | None) -> bool:
    """Whether a Tune trial whose last result is `metrics` ended (for a sweep's "was it
    interrupted" count): its last result is a final one, or it was pruned (its store row,
    `stored_status`, says so). A trial interrupted mid-training last reported "running"
    and has no row."""
    status = (metrics or {}).get("status")
    if status == RUNNING:
        return stored_status == PRUNED
    return bool(status)


def finite_real(value: Any) -> bool:
    """A finite int or float, never a bool (a flag is no measurement)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
