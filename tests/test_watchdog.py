"""No silent hangs: stale DeepSpeed build locks are cleared (and said), and a run that does
not reach its first step, or stops stepping, is stopped with the phase it was stuck in.

The decision (`RunWatch`) is tested on hand-made records; the rest on a real local Ray
with real Ray Train + DeepSpeed runs of a ~90k-parameter Llama (test_train_engine's).
Hangs are real blocking calls: a dataset factory that opens a FIFO nobody writes to, a
loss that sleeps, workers asking for more CPUs than the cluster has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
import ray
from test_train_engine import BASE, causal_lm_loss, random_tokens, tiny_llama

from raydaa.train import ops, phases, run_training
from raydaa.train.in_process import usable as in_process_usable
from raydaa.train.watchdog import Limits, RunWatch, WatchdogTimeout

# ---------------------------------------------------------------------------------------
# The decision, on hand-made records
# ---------------------------------------------------------------------------------------


def record(phase, step=0, detail="", beat=1.0, where="x.py:1 f"):
    return {"phase": phase, "step": step, "total": 10, "detail": detail, "beat_at": beat,
            "where": where}


def test_startup_verdict_names_the_least_advanced_worker_and_its_wait():
    watch = RunWatch(Limits(startup_s=30, stall_s=10), ["rank0", "rank1"], started=0.0)
    records = {"rank0": record(phases.FIRST_STEP),
               "rank1": record(phases.OP_BUILD, detail="ops in /x",
                               where="torch/utils/file_baton.py:50 wait")}
    assert watch.observe(records, now=20.0) is None
    assert watch.observe(records, now=29.0) is None
    verdict = watch.observe(records, now=31.0)
    assert verdict.startswith("no first step within 30 s (start-up watchdog): stuck in op build")
    assert "rank1: op build (ops in /x), in torch/utils/file_baton.py:50 wait" in verdict


def test_a_phase_entered_just_before_the_deadline_gets_one_more_beat():
    # Its first record was written by the phase change itself, so its `where` is the
    # line that entered the phase; the next beat shows where the worker now waits.
    watch = RunWatch(Limits(startup_s=15, stall_s=10), ["rank0"], started=0.0)
    assert watch.observe({"rank0": record(phases.MODEL_LOAD)}, now=5.0) is None
    entered = {"rank0": record(phases.DATA_LOAD, where="raydaa/train/loop.py:86 train")}
    assert watch.observe(entered, now=14.5) is None
    assert watch.observe(entered, now=16.0) is None  # past the limit, but within a beat
    waiting = {"rank0": record(phases.DATA_LOAD, beat=2.0, where="data.py:3 blocked_read")}
    verdict = watch.observe(waiting, now=17.6)
    assert verdict.startswith("no first step within 15 s (start-up watchdog): stuck in data load")
    assert "in data.py:3 blocked_read" in verdict


def test_startup_verdict_without_any_worker_is_worker_start():
    watch = RunWatch(Limits(startup_s=5, stall_s=5), ["rank0"], started=0.0)
    verdict = watch.observe({}, now=6.0)
    assert "stuck in worker start" in verdict and "rank0: not started" in verdict


def test_stall_counts_from_the_last_change_seen_and_flags_silent_workers():
    watch = RunWatch(Limits(startup_s=5, stall_s=30), ["rank0"], started=0.0)
    assert watch.observe({"rank0": record(phases.TRAINING, step=1, beat=1)}, now=100.0) is None
    # steps keep coming: no stall however long the run (startup no longer applies)
    for t in range(101, 140):
        assert watch.observe({"rank0": record(phases.TRAINING, step=t, beat=t)}, now=t) is None
    frozen = {"rank0": record(phases.TRAINING, step=139, beat=139)}
    assert watch.observe(frozen, now=168.0) is None
    verdict = watch.observe(frozen, now=170.0)
    assert verdict.startswith("no progress for 30 s after step 139 (stall watchdog)")
    assert "silent for 31 s" in verdict  # the record itself stopped being rewritten


def test_a_phase_change_is_progress():
    watch = RunWatch(Limits(startup_s=5, stall_s=10), ["rank0"], started=0.0)
    watch.observe({"rank0": record(phases.TRAINING, step=5)}, now=1.0)
    watch.observe({"rank0": record(phases.CHECKPOINT, step=5)}, now=9.0)
    assert watch.observe({"rank0": record(phases.CHECKPOINT, step=5)}, now=18.0) is None
    assert watch.observe({"rank0": record(phases.CHECKPOINT, step=5)}, now=20.0) is not None


# ---------------------------------------------------------------------------------------
# DeepSpeed's op build lock
# ---------------------------------------------------------------------------------------


def _op_dir():
    return ops.extensions_dir() / "deepspeed_shm_comm"


def leave_stale_lock() -> str:
    """A process takes torch's build lock exactly as cpp_extension does, then is killed."""
    lock = _op_dir() / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    code = ("import os, sys, time; from torch.utils.file_baton import FileBaton; "
            "assert FileBaton(sys.argv[1]).try_acquire(); print('held', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists()
    return str(lock)


def test_a_stale_build_lock_is_removed_and_said():
    ops.prepare_cpu_ops(say=lambda _: None)  # built once; the test is about the lock
    lock = leave_stale_lock()
    said = []
    ops.prepare_cpu_ops(say=said.append, timeout_s=60)
    assert not os.path.exists(lock)
    assert said == [f"removed a stale DeepSpeed build lock left by a killed build: {lock}"]


def test_a_live_builder_is_waited_for_and_its_lock_left_alone():
    """A live build holds the flock: its torch lock is not stale, so it is not removed;
    the waiter says who it waits for and goes on once the build is done."""
    ops.prepare_cpu_ops(say=lambda _: None)
    directory = ops.extensions_dir()
    code = (
        "import sys, time, pathlib; from raydaa.train import ops; d = pathlib.Path(sys.argv[1])\n"
        "with ops.build_lock(d, say=print):\n"
        "    lock = d / 'deepspeed_shm_comm' / 'lock'; lock.touch(); print('building', flush=True)\n"
        "    time.sleep(4); lock.unlink()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "building"
    said, start = [], time.monotonic()
    ops.prepare_cpu_ops(say=said.append, timeout_s=60)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - start > 2  # it waited for the build ...
    assert len(said) == 1 and said[0].startswith(f"waiting for pid {proc.pid} on ")
    assert not any("stale" in s for s in said)  # ... and did not call a live lock stale


# ---------------------------------------------------------------------------------------
# Real runs on a local Ray
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _ship_test_modules_by_value():
    # pytest imports test files as top-level modules Ray's workers cannot import
    import test_train_engine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(test_train_engine)

def blocked_dataset(fifo: str):
    """A dataset factory that never returns: it opens a FIFO nobody writes to (the shape
    of a data mount that stopped answering)."""
    with open(fifo, "rb") as f:  # blocks in open(2)
        return f.read()


def release(fifo) -> None:
    """Let a reader blocked in `blocked_dataset` go (one run in this process's thread is
    left there by its watchdog, and this process trains in process again once it ends);
    nothing when no reader is left."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader
        pass


def engine_run(tmp_path, name, *, dataset=None, loss_fn=causal_lm_loss, **settings):
    return run_training(
        {**BASE, **settings},
        progress=name,
        name=name,
        storage_path=str(tmp_path / "runs"),
        model_fn=tiny_llama,
        loss_fn=loss_fn,
        dataset=dataset or random_tokens,
    )


def wait_for_free_cpus(expected: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < expected:
        assert time.monotonic() < deadline, f"CPUs not freed: {ray.available_resources()}"
        time.sleep(0.5)


@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_run_after_a_killed_build_finishes_and_says_it_cleared_the_lock(
    ray_cluster, tmp_path, capsys
):
    ops.prepare_cpu_ops(say=lambda _: None)
    lock = leave_stale_lock()
    result = engine_run(tmp_path, "after-killed-build", total_steps=2, startup_timeout_s=120)
    assert result.return_value["status"] == "finished"
    assert not os.path.exists(lock)
    out = capsys.readouterr().out
    assert f"after-killed-build: rank0: removed a stale DeepSpeed build lock left by a killed build: {lock}" in out


# Start-up limit of the runs that block in their data load: the phases before it (worker
# launch, imports, model load) must fit, and on a loaded 2-core CI machine a Ray Train
# worker's model load alone once took over 40 s (15 s before that); the tests wait this long.
STARTUP_S = 80


@pytest.mark.ray
@pytest.mark.deepspeed
@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "ray-train"])
def test_a_run_blocked_in_its_data_load_fails_with_that_phase(ray_cluster, tmp_path, capsys,
                                                              in_process):
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(WatchdogTimeout) as caught:
        engine_run(tmp_path, "blocked-data", dataset=partial(blocked_dataset, str(fifo)),
                   startup_timeout_s=STARTUP_S, in_process=in_process)
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert message.startswith(f"no first step within {STARTUP_S} s (start-up watchdog): "
                              "stuck in data load"), message
    assert f"blocked_dataset('{fifo}')" in message  # what it was waiting on ...
    assert "test_watchdog.py" in message and "blocked_dataset" in message  # ... and where
    assert STARTUP_S < elapsed < STARTUP_S + 45
    wait_for_free_cpus(2)  # the stuck worker is gone, its CPU free for the next run
    assert "blocked-data: rank0 data load" in capsys.readouterr().out  # the user saw the phase
    assert in_process_usable() is not in_process  # an abandoned thread: later runs via Ray
    release(fifo)
    wait_until(in_process_usable, "the abandoned run's thread to end")


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


WAKE = threading.Event()


def sleepy_loss(engine, batch, *, after_steps: int, state={"calls": 0}):  # noqa: B006
    state["calls"] += 1
    while state["calls"] > after_steps and not WAKE.is_set():
        time.sleep(0.2)  # in this frame, so the verdict's `where` names sleepy_loss
    return causal_lm_loss(engine, batch)


@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_run_that_stops_stepping_fails_as_a_stall(ray_cluster, tmp_path):
    with pytest.raises(WatchdogTimeout) as caught:
        engine_run(tmp_path, "stalled", loss_fn=partial(sleepy_loss, after_steps=2),
                   global_batch_size=1, total_steps=6, stall_timeout_s=10)
    message = str(caught.value)
    assert message.startswith("no progress for 10 s after step 2 (stall watchdog)")
    assert "rank0: training at step 2/6" in message and "sleepy_loss" in message
    wait_for_free_cpus(2)
    WAKE.set()  # the in-process run's thread then stops at its next step
    wait_until(in_process_usable, "the stalled run's thread to end")


@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_run_whose_workers_never_start_says_what_it_asked_for(ray_cluster, tmp_path):
    with pytest.raises(WatchdogTimeout) as caught:
        engine_run(tmp_path, "too-big", cpus_per_worker=8, startup_timeout_s=10,
                   in_process=False)  # a run in process asks Ray for nothing
    message = str(caught.value)
    assert "stuck in worker start" in message
    assert "each of 1 workers asks for {'CPU': 8}" in message and "'CPU': 2.0" in message
    wait_for_free_cpus(2)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_hung_trial_fails_with_its_phase_and_the_sweep_goes_on(ray_cluster, tmp_path):
    """Three trials, one at a time; the first blocks in its data load. It is recorded as
    failed with the phase within the watchdog time, and the other two then run."""
    from ray import tune

    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)

    def trial(config):
        dataset = partial(blocked_dataset, str(fifo)) if config["hang"] else random_tokens
        start = time.monotonic()
        try:
            result = engine_run(tmp_path, f"trial-{config['i']}", dataset=dataset,
                                total_steps=2, startup_timeout_s=STARTUP_S)
            tune.report({"status": result.return_value["status"], "error": "",
                         "seconds": time.monotonic() - start})
        except Exception as err:  # as raydaa's trial driver: a failed run is a row
            tune.report({"status": "failed", "error": f"{type(err).__name__}: {err}",
                         "seconds": time.monotonic() - start})

    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": 0, "memory": 2**28}),
        # the grid's first trial is the one that hangs
        param_space={"i": tune.grid_search([0, 1, 2]),
                     "hang": tune.sample_from(lambda spec: spec.config.i == 0)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="hang"),
    )
    results = {r.config["i"]: r.metrics for r in tuner.fit()}
    assert results[0]["status"] == "failed"
    assert f"WatchdogTimeout: no first step within {STARTUP_S} s" in results[0]["error"]
    assert "stuck in data load" in results[0]["error"], results[0]["error"]
    assert results[0]["seconds"] < STARTUP_S + 45
    assert results[1]["status"] == results[2]["status"] == "finished"
    release(fifo)
