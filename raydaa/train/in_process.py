"""A one-worker CPU run in the calling process: the same loop, no Ray Train processes.

Through Ray Train, every run starts a controller and a worker process, each importing Ray,
torch and DeepSpeed: about 30 CPU-seconds on tiny, as much as its training. A trial's
driver already has those imported (and is reused from trial to trial), so a run that needs
only one CPU worker trains in a thread of that process instead. What Ray Train did for the
run is done here, the same way, so that callers cannot tell the difference:

    checkpoints   copied to `<storage_path>/<name>/checkpoint_step_NNNNNN/`, the last
                  `num_to_keep` kept; a run started again under the same name resumes
                  from its latest one (a Tune retry, `--resume`)
    callbacks     Ray Train UserCallbacks get `after_report(None, [metrics], checkpoint)`
                  after every report (live metrics, intermediate results to Tune)
    failures      an error restarts the loop from the last checkpoint, `max_failures` times
    result        a `ray.train.Result` with the loop's return value and last checkpoint

Ray's own local mode (`ScalingConfig(num_workers=0)`) keeps none of these (no storage, no
callbacks, no restarts), hence this module. The torch process group is one rank of gloo,
created once per process and kept: DeepSpeed holds on to the first group it wraps.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray.train
import torch

from raydaa.io import storage
from raydaa.train import phases

COMPLETE = "raydaa_checkpoint_complete"
"""Written last into a checkpoint directory: one without it was cut short and is ignored."""
_CHECKPOINT_DIR = re.compile(r"checkpoint_step_(\d+)$")


class RunAborted(Exception):
    """The run was asked to stop (its watchdog, or Ctrl-C in the calling process)."""


def trains_in_process(settings: Any) -> bool:
    """True for a run (TrainSettings, or a scenario's resources) that trains in process."""
    return bool(settings.in_process) and settings.num_workers == 1 and not settings.use_gpu


_hung: list[threading.Thread] = []
"""Runs abandoned by their watchdog while stuck in a call that cannot be interrupted."""


def usable() -> bool:
    """False while an abandoned run's thread is still alive in this process: it may hold
    the process group or a lock, so later runs go through Ray Train."""
    _hung[:] = [t for t in _hung if t.is_alive()]
    return not _hung


def abandon(thread: threading.Thread) -> None:
    _hung.append(thread)


RANK_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
"""What a launcher sets for a rank (DeepSpeed's engine asserts LOCAL_RANK); set during a run."""


@contextlib.contextmanager
def _rank_environment():
    saved = {key: os.environ.get(key) for key in RANK_ENV}
    os.environ.update(RANK_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _process_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


class InProcessSession:
    """What the loop asks of Ray Train (raydaa.train.loop.RayTrainSession), for one rank."""

    rank, world = 0, 1

    def __init__(self, run_dir: str, *, num_to_keep: int | None, callbacks: Sequence[Any],
                 abort: threading.Event, kept: list | None = None,
                 started: float | None = None) -> None:
        self.started = started
        """When the run started here (its timeline's process start)."""
        self.run_dir, self.num_to_keep = run_dir, num_to_keep
        self.callbacks, self.abort = list(callbacks), abort
        self.kept: list[tuple[ray.train.Checkpoint, dict[str, Any]]] = (
            [] if kept is None else kept)
        """(checkpoint, its metrics) of the checkpoints this run reported and kept."""
        self.last_metrics: dict[str, Any] | None = None
        self.last_checkpoint: ray.train.Checkpoint | None = latest_checkpoint(run_dir)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return self.last_checkpoint

    def poll(self) -> None:
        if self.abort.is_set():
            raise RunAborted("the run was asked to stop")

    def report(self, metrics: dict[str, Any], checkpoint: ray.train.Checkpoint | None = None,
               checkpoint_dir_name: str | None = None) -> None:
        self.poll()
        if checkpoint is not None:
            checkpoint = self._persist(checkpoint.path, checkpoint_dir_name, metrics)
            self.last_checkpoint = checkpoint
        self.last_metrics = metrics
        for callback in self.callbacks:
            callback.after_report(None, [metrics], checkpoint)

    def _persist(self, local: str, dir_name: str,
                 metrics: dict[str, Any]) -> ray.train.Checkpoint:
        target = storage.join(self.run_dir, dir_name)
        storage.upload_dir(local, target)
        storage.write_text(storage.join(target, COMPLETE), "")
        checkpoint = _as_ray_checkpoint(target)
        self.kept[:] = [(c, m) for c, m in self.kept if c.path != checkpoint.path]
        self.kept.append((checkpoint, metrics))
        if self.num_to_keep:  # Ray Train's CheckpointConfig(num_to_keep): the latest ones
            for old in checkpoints(self.run_dir)[:-self.num_to_keep]:
                storage.remove_dir(old)
            self.kept[:] = self.kept[-self.num_to_keep:]
        return checkpoint


def checkpoints(run_dir: str) -> list[str]:
    """The run's complete checkpoint directories, oldest first."""
    done = [path.rsplit("/", 1)[0] for path in storage.list_files(run_dir, COMPLETE)]
    steps = {d: _CHECKPOINT_DIR.search(d) for d in done}
    return sorted((d for d, m in steps.items() if m), key=lambda d: int(steps[d].group(1)))


def latest_checkpoint(run_dir: str) -> ray.train.Checkpoint | None:
    found = checkpoints(run_dir)
    return _as_ray_checkpoint(found[-1]) if found else None


def _as_ray_checkpoint(path: str) -> ray.train.Checkpoint:
    # as Ray Train gives it: a path inside its filesystem (an object store's without scheme)
    fs, inner = storage.filesystem(path)
    return ray.train.Checkpoint(path=inner, filesystem=fs)


def run_in_process(loop, config: dict[str, Any], *, name: str, storage_path: str,
                   max_failures: int, num_to_keep: int | None, callbacks: Sequence[Any],
                   abort: threading.Event) -> ray.train.Result:
    """`loop(config, session)` here, restarted from its last checkpoint after an error up to
    `max_failures` times (-1: always); raises the last error or RunAborted."""
    started = time.time()
    run_dir = storage.join(storage_path, name)
    # the run's directory exists from its start, as with Ray Train (what watches for it
    # learns the run began); dot-files are left out of listings
    storage.write_text(storage.join(run_dir, ".raydaa_run"), name)
    token = config.get("watch_token") or ""
    if token:
        phases.beacon(token, "rank0").phase(phases.PROCESS_GROUP, "one-rank gloo group")
    _process_group()
    threads = torch.get_num_threads()  # the loop sets its own; the caller's comes back
    failures, kept = 0, []
    try:
        while True:
            session = InProcessSession(run_dir, num_to_keep=num_to_keep, callbacks=callbacks,
                                       abort=abort, kept=kept, started=started)
            try:
                with _rank_environment():
                    value = loop(config, session)
                break
            except RunAborted:
                raise
            except Exception:
                failures += 1
                if abort.is_set() or (max_failures != -1 and failures > max_failures):
                    raise
    finally:
        torch.set_num_threads(threads)
        _release_engine(config)
    return ray.train.Result(metrics=session.last_metrics, checkpoint=session.last_checkpoint,
                            error=None, path=run_dir, best_checkpoints=kept,
                            return_value=value)


def _release_engine(config: dict[str, Any]) -> None:
    """The engine (and, under ZeRO-3, transformers' global DeepSpeed config, which would
    make every later from_pretrained in this process partition its weights) is dropped."""
    gc.collect()
    settings = config.get("settings")
    if getattr(settings, "zero_stage", None) == 3:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()

