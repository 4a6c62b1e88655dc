"""Ray Train (V2) `TorchTrainer` around `train_loop_per_worker`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from raydaa.train import in_process, phases
from raydaa.train.loop import train_loop_per_worker
from raydaa.train.progress import ProgressPrinter
from raydaa.train.settings import TrainSettings
from raydaa.train.watchdog import (
    ABORT_GRACE_S,
    VERDICT,
    Limits,
    RunWatch,
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
    config = loop_config(settings, model_fn=model_fn, loss_fn=loss_fn, dataset=dataset,
                         collate_fn=collate_fn, count_tokens=count_tokens,
                         resume_from=resume_from, eval_fn=eval_fn, watch_token=watch_token)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=run,
        torch_config=WatchedTorchConfig(
            backend="nccl" if settings.use_gpu else "gloo", watch_token=watch_token
        ),
    )


def loop_config(settings: TrainSettings, *, model_fn: Callable[..., Any],
                loss_fn: Callable[..., Any], dataset: Any, collate_fn: Callable | None = None,
                count_tokens: Callable | None = None,
                resume_from: ray.train.Checkpoint | str | None = None,
                eval_fn: Callable | None = None, watch_token: str = "") -> dict[str, Any]:
    """`train_loop_per_worker`'s config (raydaa/train/loop.py documents its keys)."""
    return {"settings": settings, "model_fn": model_fn, "loss_fn": loss_fn, "dataset": dataset,
            "collate_fn": collate_fn, "count_tokens": count_tokens, "resume_from": resume_from,
            "eval_fn": eval_fn, "watch_token": watch_token}


def run_training(
    settings: TrainSettings | dict[str, Any], *, progress: str | None = None, **kwargs: Any
) -> ray.train.Result:
    """Train under a watchdog: blocks until the run ends; raises the error that ended it
    (TrainingFailedError if a Ray Train worker raised), WatchdogTimeout (naming the phase
    and what it waited on) if the run reached no first step, or stopped stepping, in time.
    A one-worker CPU run trains in this process (raydaa/train/in_process.py), any other
    through `build_trainer(...).fit()`; `kwargs` are build_trainer's either way.
    `progress`: a label; progress lines (phases, steps) are printed under it.
    `result.return_value` holds rank 0's {"status", "step", "history"},
    `result.checkpoint` the last checkpoint (None for a run that diverged before one)."""
    token = f"run-{uuid.uuid4().hex[:16]}"
    settings = TrainSettings.coerce(settings)
    abort = threading.Event()
    watch = None
    if in_process.trains_in_process(settings) and in_process.usable():
        watch = RunWatch(Limits(settings.startup_timeout_s, settings.stall_timeout_s),
                         ["rank0"], started=time.monotonic())
        fit = partial(_fit_in_process, settings, token, abort, **kwargs)
    else:
        fit = build_trainer(settings, watch_token=token, **kwargs).fit
    printer = ProgressPrinter(token, progress) if progress else None
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = err

    # The run goes off the calling thread, so Ray installs no Ctrl-C handler of its own
    # (one that outlives the run and exits 0); a Ctrl-C here asks the run to abort
    # (through its controller, or the in-process flag) and waits until it has.
    thread = threading.Thread(target=run, name="raydaa-fit", daemon=True)
    try:
        if printer:
            printer.__enter__()
        thread.start()
        try:
            while thread.is_alive():
                thread.join(timeout=0.5)
                if watch is not None and thread.is_alive() and _watchdog_fired(watch, token):
                    abort.set()
                    _wait_or_abandon(thread)
                    break
        except KeyboardInterrupt:
            request_abort(token)
            abort.set()
            thread.join(timeout=ABORT_GRACE_S + 20)
            raise
    finally:
        if printer:
            printer.__exit__(None, None, None)
        verdict = verdict_of(token)
        phases.clear(token)
    if "error" in outcome or "result" not in outcome:  # no result: a run left stuck
        if verdict:
            raise WatchdogTimeout(verdict) from outcome.get("error")
        raise outcome["error"]
    return outcome["result"]


def _fit_in_process(settings: TrainSettings, token: str, abort: threading.Event, *,
                    name: str, storage_path: str, max_failures: int = 0,
                    num_to_keep: int | None = 2, callbacks: Sequence[Any] = (),
                    **loop_kwargs: Any) -> ray.train.Result:
    config = loop_config(settings, watch_token=token, **loop_kwargs)
    return in_process.run_in_process(train_loop_per_worker, config, name=name,
                                     storage_path=storage_path, max_failures=max_failures,
                                     num_to_keep=num_to_keep, callbacks=callbacks, abort=abort)


def _watchdog_fired(watch: RunWatch, token: str) -> bool:
    """The in-process run's watchdog (a Ray Train run has it in its controller): a verdict
    is recorded under the run's token, as the controller's would be."""
    try:
        verdict = watch.observe(phases.read(token), time.monotonic())
    except Exception:  # noqa: BLE001 - the GCS briefly unreachable: look again
        return False
    if verdict is not None:
        phases.put(token, VERDICT, {"message": verdict, "at": time.time()})
    return verdict is not None


def _wait_or_abandon(thread: threading.Thread) -> None:
    """A run stopped by its watchdog leaves at its next step; one stuck inside a call
    (a lock, a hung data load) cannot be interrupted in its thread: it is left behind, and
    this process sends its later runs through Ray Train while it lives."""
    thread.join(timeout=ABORT_GRACE_S)
    if thread.is_alive():
        in_process.abandon(thread)
