"""Ray Train (V2) `TorchTrainer` around `train_loop_per_worker`."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from raydaa.train import phases
from raydaa.train.loop import train_loop_per_worker
from raydaa.train.progress import ProgressPrinter
from raydaa.train.settings import TrainSettings
from raydaa.train.watchdog import (
    ABORT_GRACE_S,
    Limits,
    WatchdogCallback,
    WatchdogTimeout,
    WatchedTorchConfig,
    request_abort,
    verdict_of,
)

HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
REPORT_POLL_S = 0.2
"""How often a run's controller collects its workers' reports (and checks their health)."""


def build_trainer(
    settings: TrainSettings | dict[str, Any],
    *,
    model_fn: Callable[..., Any],
    loss_fn: Callable[..., Any],
    dataset: Any,
    name: str,
    storage_path: str,
    collate_fn: Callable | None = None,
    count_tokens: Callable | None = None,
    resume_from: ray.train.Checkpoint | str | None = None,
    eval_fn: Callable | None = None,
    max_failures: int = 0,
    num_to_keep: int | None = 2,
    callbacks: Sequence[Any] = (),
    watch_token: str = "",
) -> TorchTrainer:
    """A TorchTrainer running the DeepSpeed loop on `settings.num_workers` workers.

    A second trainer with the same `name` and `storage_path` resumes from that run's
    latest checkpoint (Ray Train V2 restores its checkpoint manager from storage), and
    so does a worker-group restart after a failure (`max_failures`). `resume_from`
    starts a run under a new name from a checkpoint of this engine (same seed and global
    batch), e.g. `result.checkpoint` of an earlier run.
    `num_to_keep` bounds disk use: ZeRO optimizer state is ~12 bytes per parameter.
    `watch_token` names the run's phase records (raydaa/train/phases.py); with one, the
    run has a start-up and stall watchdog (`settings.startup_timeout_s`, `stall_timeout_s`).
    `eval_fn(engine, step)` runs every `settings.eval_every` steps (raydaa/train/eval_hook.py).
    """
    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):
        raise RuntimeError("raydaa.train needs Ray Train V2: unset RAY_TRAIN_V2_ENABLED=0")
    settings = TrainSettings.coerce(settings)
    # Ray Train V2 passes each report from a worker to the controller through a one-slot
    # queue that the controller empties once per health check (every 2 s by default), so
    # a run that reports every step waits up to 2 s per step: on tiny, 26 s of a trial's
    # 46 s of training. The variable reaches the controller with the run (Ray propagates
    # it); one the user set wins.
    os.environ.setdefault(HEALTH_CHECK_INTERVAL_ENV, f"{REPORT_POLL_S:g}")
    resources = {"CPU": settings.cpus_per_worker}
    if settings.use_gpu:
        resources["GPU"] = 1
    scaling = ray.train.ScalingConfig(
        num_workers=settings.num_workers,
        use_gpu=settings.use_gpu,
        resources_per_worker=resources,
    )
    run = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
        callbacks=list(callbacks) + (
            [WatchdogCallback(watch_token, Limits(settings.startup_timeout_s,
                                                  settings.stall_timeout_s),
                              settings.num_workers, resources)]
            if watch_token else []
        ),
    )
    config = {
        "settings": settings,
        "model_fn": model_fn,
        "loss_fn": loss_fn,
        "dataset": dataset,
        "collate_fn": collate_fn,
        "count_tokens": count_tokens,
        "resume_from": resume_from,
        "eval_fn": eval_fn,
        "watch_token": watch_token,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=run,
        torch_config=WatchedTorchConfig(
            backend="nccl" if settings.use_gpu else "gloo", watch_token=watch_token
        ),
    )


def run_training(
    settings: TrainSettings | dict[str, Any], *, progress: str | None = None, **kwargs: Any
) -> ray.train.Result:
    """`build_trainer(...).fit()` under a watchdog: blocks until the run ends; raises
    TrainingFailedError if a worker raised, WatchdogTimeout (naming the phase and what it
    waited on) if the run reached no first step, or stopped stepping, in time.
    `progress`: a label; progress lines (phases, steps) are printed under it.
    `result.return_value` holds rank 0's {"status", "step", "history"},
    `result.checkpoint` the last checkpoint (None for a run that diverged before one)."""
    token = f"run-{uuid.uuid4().hex[:16]}"
    trainer = build_trainer(settings, watch_token=token, **kwargs)
    printer = ProgressPrinter(token, progress) if progress else None
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = err

    # fit() runs off the calling thread, so Ray installs no Ctrl-C handler of its own
    # (one that outlives the run and exits 0); a Ctrl-C here asks the run's controller to
    # abort through the same channel as the watchdog, and waits until it has.
    thread = threading.Thread(target=fit, name="raydaa-fit", daemon=True)
    try:
        if printer:
            printer.__enter__()
        thread.start()
        try:
            while thread.is_alive():
                thread.join(timeout=0.5)
        except KeyboardInterrupt:
            request_abort(token)
            thread.join(timeout=ABORT_GRACE_S + 20)
            raise
    finally:
        if printer:
            printer.__exit__(None, None, None)
        verdict = verdict_of(token)
        phases.clear(token)
    if "error" in outcome:
        if verdict:
            raise WatchdogTimeout(verdict) from outcome["error"]
        raise outcome["error"]
    return outcome["result"]
