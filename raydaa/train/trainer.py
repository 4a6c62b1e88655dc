"""Ray Train (V2) `TorchTrainer` around `train_loop_per_worker`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from raydaa.train import phases
from raydaa.train.loop import train_loop_per_worker
from raydaa.train.progress import ProgressPrinter
from raydaa.train.settings import TrainSettings
from raydaa.train.watchdog import Limits, WatchdogCallback, WatchdogTimeout, WatchedTorchConfig, verdict_of


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
    """
    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):
        raise RuntimeError("raydaa.train needs Ray Train V2: unset RAY_TRAIN_V2_ENABLED=0")
    settings = TrainSettings.coerce(settings)
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
    try:
        if printer:
            printer.__enter__()
        return trainer.fit()
    except Exception as err:
        verdict = verdict_of(token)
        if verdict:
            raise WatchdogTimeout(verdict) from err
        raise
    finally:
        if printer:
            printer.__exit__(None, None, None)
        phases.clear(token)
