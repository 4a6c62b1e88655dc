"""`train_loop_per_worker`: the per-worker DeepSpeed training loop run by Ray Train.

Generic over the objective: it calls `loss_fn(engine, batch) -> (loss, metrics)` and never
looks inside. Config keys (the `train_loop_config` of the TorchTrainer):

    settings    TrainSettings or its dict form
    model_fn    callable(**model_load_kwargs) -> torch.nn.Module (e.g. an HF causal LM);
                called on every worker after seeding, so all ranks start identical
    loss_fn     callable(engine, batch) -> (scalar loss tensor, {name: scalar}); batch is
                the collated micro batch on the engine's device, tensors (m, ...); the
                metrics must have the same keys on every worker (they are all-reduced)
    dataset     map-style dataset (len + getitem) of examples, or a zero-argument callable
                building one on the worker (keeps large data out of the pickled config)
    collate_fn  optional, list of examples -> batch dict; default torch default_collate
                (examples of equal-shape tensors; HF datasets: use .with_format("torch"))
    count_tokens optional, batch -> int; default `metrics.count_tokens`
    resume_from optional ray.train.Checkpoint or path of one (from this engine) to start
                from when Ray has no checkpoint of its own for this run (Ray Train V2's
                replacement for the trainer's removed `resume_from_checkpoint`)
    eval_fn     optional, callable(engine, step) -> {name: number}: every
                `settings.eval_every` steps (never at the last) on every rank, with the
                full weights in place; rank 0 computes, and its metrics join that step's
                report on every rank (raydaa/train/eval_hook.py has the contract)
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch.utils.data import default_collate

from raydaa.train import ops, phases
from raydaa.train.checkpoint import export_hf, load_training_state, save_training_state
from raydaa.train.deepspeed_config import (
    build_deepspeed_config,
    make_lr_scheduler,
    model_load_kwargs,
)
from raydaa.train.eval_hook import describe, run_eval
from raydaa.train.metrics import StepStats, count_tokens, is_finite, peak_memory_mib
from raydaa.train.settings import TrainSettings
from raydaa.train.sharding import BatchPlan
from raydaa.train.timeline import SAVED, TRAIN_END, TRAINING_START, marks

RUNNING, FINISHED, STOPPED, DIVERGED = "running", "finished", "stopped", "diverged"


def train_loop_per_worker(config: dict[str, Any], session: Any = None) -> dict[str, Any]:
    """Train with DeepSpeed on this worker; report metrics and checkpoints to Ray Train
    (or to `session`: raydaa/train/in_process.py's, for a run in the calling process).

    Returns (rank 0's becomes `Result.return_value`): {"status", "step", "history",
    "timeline", "node_id", "hostname"}, where history is the list of metric dicts reported
    by this invocation (after a restart: since the checkpoint it resumed from), timeline
    its moments (raydaa.train.timeline) and node_id / hostname say where it ran.
    """
    session = session or RayTrainSession()
    timeline = marks(session.started)
    settings = TrainSettings.coerce(config["settings"])
    rank, world = session.rank, session.world
    if world != settings.num_workers:
        raise ValueError(f"settings.num_workers={settings.num_workers} but Ray started {world}")
    # 2 workers on 2 cores: more threads than reserved CPUs only oversubscribes.
    torch.set_num_threads(settings.cpus_per_worker)
    token = config.get("watch_token") or ""
    beacon = phases.beacon(token, f"rank{rank}") if token else _NoBeacon()

    engine = _build_engine(config["model_fn"], settings, beacon)
    try:
        return _train(engine, config, settings, session, timeline, beacon, rank, world)
    finally:
        # DeepSpeed's gradient hooks tie the engine to its parameters through autograd
        # (C++ references Python's collector cannot see): without this, a process that
        # trains again (a run in process, a reused trial driver) keeps every engine.
        engine.destroy()


def _train(engine: Any, config: dict[str, Any], settings: TrainSettings, session: Any,
           timeline: dict[str, float], beacon: Any, rank: int, world: int) -> dict[str, Any]:
    device = engine.device
    start_step, tokens_seen, last_report = 0, 0, None
    # Ray's own checkpoint (a restart of this run) wins over the one we were started from.
    checkpoint = session.checkpoint() or _as_checkpoint(config.get("resume_from"))
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = load_training_state(engine, Path(ckpt_dir), rank=rank)
        _check_resumable(state, settings)
        last_report = state.get("report")  # the report saved with it (absent in older ones)
        start_step = int(state["step"])
        tokens_seen = int(state.get("tokens_seen", 0))  # absent in older checkpoints

    dataset = config["dataset"]
    if callable(dataset) and not hasattr(dataset, "__getitem__"):
        beacon.phase(phases.DATA_LOAD, _describe(dataset))
        dataset = dataset()
    collate: Callable = config.get("collate_fn") or default_collate
    tokens_of: Callable = config.get("count_tokens") or count_tokens
    loss_fn: Callable = config["loss_fn"]
    eval_fn: Callable | None = config.get("eval_fn") if settings.eval_every else None
    plan = BatchPlan(len(dataset), global_batch_size=settings.global_batch_size,
                     micro_batch_size=settings.micro_batch_size, world_size=world,
                     rank=rank, seed=settings.seed)

    history: list[dict[str, Any]] = []
    # Where this attempt runs: a restart after a lost worker or node may land elsewhere.
    where = {"node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
             "hostname": socket.gethostname()}
    if start_step >= settings.last_step:
        # Restarted from a checkpoint that is already the end (a run started again after
        # it finished, e.g. its trial retried): nothing left to train; its last report,
        # saved with the checkpoint, is this invocation's, so loss and tokens seen survive.
        status = FINISHED if start_step >= settings.total_steps else STOPPED
        report = dict(last_report or {}) | {"step": start_step, "status": status}
        session.report(report)
        beacon.close()
        history = [report] if last_report else []
        return {"status": status, "step": start_step, "history": history, **where}
    status = RUNNING
    timeline[TRAINING_START] = time.time()
    beacon.phase(phases.FIRST_STEP, f"step {start_step + 1} of {settings.total_steps}")

    engine.train()
    window_start, window_tokens = time.perf_counter(), 0
    run_start, run_tokens = window_start, 0  # this invocation's throughput, for progress
    for step in range(start_step, settings.last_step):
        session.poll()  # an in-process run stops here when its watchdog or Ctrl-C asks
        lr = float(engine.get_lr()[0])  # the lr this step uses (scheduler stepped last step)
        stats = StepStats()
        for micro in range(settings.grad_accum_steps):
            # (m examples) -> batch of (m, ...) tensors, e.g. {"input_ids": (m, T)}
            batch = _to_device(collate([dataset[i] for i in plan.indices(step, micro)]), device)
            loss, metrics = loss_fn(engine, batch)
            engine.backward(loss)  # DeepSpeed scales by 1/accum
            engine.step()  # updates (clip, AdamW, lr schedule) only at the accumulation boundary
            stats.add(loss, metrics, tokens_of(batch))
        done = step + 1
        loss_mean, metric_means, tokens = stats.reduce(device)
        grad_norm = _grad_norm(engine)
        window_tokens += tokens
        tokens_seen += tokens
        run_tokens += tokens
        beacon.stepped(done, settings.total_steps, loss=loss_mean,
                       tokens_per_s=run_tokens / max(time.perf_counter() - run_start, 1e-9))

        diverged = not (is_finite(loss_mean) and is_finite(grad_norm))
        if diverged:
            status = DIVERGED
        elif done == settings.last_step:
            status = FINISHED if done == settings.total_steps else STOPPED
        save = status in (FINISHED, STOPPED) or (
            settings.checkpoint_every is not None and done % settings.checkpoint_every == 0)
        # never at the run's last step: whoever runs the loop evaluates its final model
        evaluate = (eval_fn is not None and not diverged and done < settings.total_steps
                    and done % settings.eval_every == 0)
        if not (diverged or save or evaluate or done % settings.log_every == 0):
            continue

        elapsed = time.perf_counter() - window_start
        report = {
            "step": done,
            "epoch": plan.epoch_of(step),
            "loss": loss_mean,
            **metric_means,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": window_tokens,  # since the previous report, so the history sums to the run
            "tokens_seen": tokens_seen,  # since step 0, across restarts (kept in checkpoints)
            "tokens_per_s": window_tokens / elapsed if elapsed > 0 else 0.0,
            "samples_seen": done * settings.global_batch_size,
            "status": status,
            **peak_memory_mib(device),
        }
        if diverged:
            # A non-finite model is worth nothing: report the step, save nothing, stop.
            report["diverged_step"] = done
        if evaluate:
            beacon.phase(phases.EVALUATION, f"step {done}")
            eval_start = time.perf_counter()
            evaluation = run_eval(engine, eval_fn, done, rank=rank, world=world,
                                  zero_stage=settings.zero_stage)
            report |= evaluation
            run_start += time.perf_counter() - eval_start  # throughput of training alone
            if rank == 0:
                beacon.note(f"step {done}: {describe(eval_fn, evaluation)}")
        if save and not diverged:
            beacon.phase(phases.CHECKPOINT, f"step {done}")
        if status != RUNNING:
            timeline[TRAIN_END] = time.time()
        _report(session, engine, report, rank=rank, settings=settings,
                save=save and not diverged)
        if status != RUNNING:
            timeline[SAVED] = time.time()
        history.append(report)
        window_start, window_tokens = time.perf_counter(), 0
        if diverged:
            break
    beacon.close()
    return {"status": status, "step": history[-1]["step"], "history": history,
            "timeline": timeline, **where}


class _NoBeacon:
    """A run started without a watch token (a bare `build_trainer`) reports no phases."""

    def phase(self, *args: Any, **kwargs: Any) -> None: ...
    def stepped(self, *args: Any, **kwargs: Any) -> None: ...
    def note(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self, *args: Any, **kwargs: Any) -> None: ...


def _describe(fn: Any) -> str:
    """A dataset factory as a user would recognise it: `load_saved_dataset('/path')`."""
    if isinstance(fn, partial):
        args = ", ".join(repr(a) for a in fn.args)
        return f"{getattr(fn.func, '__name__', fn.func)}({args})"
    return getattr(fn, "__name__", type(fn).__name__)


def _build_engine(model_fn: Callable[..., torch.nn.Module], settings: TrainSettings,
                  beacon: Any) -> Any:
    """Seeded model from the factory, wrapped by `deepspeed.initialize`."""
    if not settings.use_gpu:
        # Before DeepSpeed loads it itself, in a place and under a lock we control.
        beacon.phase(phases.OP_BUILD, f"DeepSpeed CPU ops in {ops.extensions_dir()}")
        ops.prepare_cpu_ops(say=beacon.note)
    # Imported here, not at module level: the Ray Train controller unpickles this module
    # too and has no use for DeepSpeed's import time.
    import deepspeed

    if settings.use_gpu:
        torch.cuda.set_device(ray.train.torch.get_device())
    # Ray Train (or raydaa/train/in_process.py, one rank) already created the torch process
    # group (gloo on CPU, nccl on GPU); DeepSpeed wraps that one instead of its own.
    beacon.phase(phases.DEEPSPEED_INIT, "deepspeed.init_distributed")
    deepspeed.init_distributed(dist_backend="nccl" if settings.use_gpu else "gloo")
    ds_config = build_deepspeed_config(settings)
    hf_ds_config = None
    if settings.zero_stage == 3:
        # Keeps a global reference that makes HF from_pretrained/from_config partition
        # weights at load time (zero.Init) instead of materialising the full model per rank.
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds_config = HfDeepSpeedConfig(ds_config)
    torch.manual_seed(settings.seed)
    beacon.phase(phases.MODEL_LOAD, _describe(model_fn))
    model = model_fn(**model_load_kwargs(settings))
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # no KV cache in training; HF refuses it with checkpointing
    beacon.phase(phases.DEEPSPEED_INIT, f"deepspeed.initialize (ZeRO-{settings.zero_stage})")
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=partial(make_lr_scheduler, settings=settings),
    )
    engine._raydaa_hf_ds_config = hf_ds_config  # lives as long as the engine
    return engine


class RayTrainSession:
    """The loop's view of Ray Train on a worker: rank, world, the checkpoint to resume
    from, reports. raydaa/train/in_process.py has the same four for a run in the calling
    process."""

    started = None
    """This worker process was created for the run (raydaa/train/timeline.py)."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: ray.train.Checkpoint | None = None,
               checkpoint_dir_name: str | None = None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name)

    def poll(self) -> None:
        """Ray Train's controller stops its workers itself."""


def _report(session: Any, engine: Any, metrics: dict[str, Any], *, rank: int,
            settings: TrainSettings, save: bool) -> None:
    """`report` from every rank (in Ray Train a barrier); with a checkpoint, each rank
    contributes its own directory (its ZeRO shard) and Ray merges them."""
    if not save:
        session.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="raydaa-ckpt-") as tmp:
        directory = Path(tmp)
        client_state = {
            "step": metrics["step"],
            "samples_seen": metrics["samples_seen"],
            "seed": settings.seed,
            "global_batch_size": settings.global_batch_size,
            "tokens_seen": metrics["tokens_seen"],
            # what a run started again from this checkpoint reports if nothing is left
            "report": {k: v for k, v in metrics.items()
                       if v is None or isinstance(v, bool | int | float | str)},
        }
        save_training_state(engine, directory, rank=rank, client_state=client_state)
        if settings.export_hf and metrics["status"] in (FINISHED, STOPPED):
            export_hf(engine, directory, rank=rank, zero_stage=settings.zero_stage)
        session.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_step_{metrics['step']:06d}",
        )


def _check_resumable(state: Mapping[str, Any], settings: TrainSettings) -> None:
    """The data position is a function of (step, seed, global batch): refuse a resume
    that would silently replay a different data order."""
    for key in ("seed", "global_batch_size"):
        if state.get(key) != getattr(settings, key):
            raise ValueError(
                f"cannot resume: checkpoint has {key}={state.get(key)}, settings have "
                f"{getattr(settings, key)}; the data order would differ"
            )


def _as_checkpoint(value: Any) -> ray.train.Checkpoint | None:
    if value is None or isinstance(value, ray.train.Checkpoint):
        return value
    return ray.train.Checkpoint(path=str(value))


def _grad_norm(engine: Any) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
