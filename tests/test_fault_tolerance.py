"""A Ray Train worker killed in the middle of an alignment run: Train restarts the worker
group from the run's last checkpoint (scenario resources.max_failures = 1) and the run
ends exactly where an uninterrupted run of the same configuration ends.

Both runs go at once on the 2-CPU test cluster (one worker each): tiny DPO with a global
batch of 128 (a 12-step schedule over 1500 pairs), stopped after 6 steps to keep the test
short (status "stopped", with its HF export), a checkpoint every 2 steps. The
killed worker is found among this test process's own descendants by Ray's process title
(`ray::RayTrainWorker`), never a process of another Ray on the machine.

Tolerance: resume restores weights, Adam state, lr schedule, RNG and data position, and
one worker has no cross-rank reduction, so the same float32 operations replay: observed
bit-exact (max |diff| 0 on every weight, the final loss and reward accuracy). The test
allows rtol=1e-6, atol=1e-7, as the engine's own resume test does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from raydaa.config.scenario import load_scenario
from raydaa.config.search_space import AlignConfig
from raydaa.train.stages import prepare_alignment, run_alignment, run_sft, scenario_dir

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

CONFIG = AlignConfig.from_config({"method": "dpo", "beta": 0.1, "lr": 1e-4})
STEPS = 6
TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}


def train_workers() -> set[int]:
    """PIDs of Ray Train workers started by this test process's own Ray."""
    pids = set()
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::RayTrainWorker"):
                pids.add(proc.pid)
        except psutil.Error:
            pass
    return pids


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not (value := condition()):
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.2)
    return value


def hf_weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """(uninterrupted, killed-and-restarted) StageResults and the killed run's name."""
    results = tmp_path_factory.mktemp("results")
    scenario = load_scenario("tiny")
    scenario.align.global_batch_size, scenario.align.micro_batch_size = 128, 64
    scenario.align.epochs = 1
    assert scenario.resources.max_failures == 1
    scenario.resources.in_process = False  # Ray Train's worker restart is what is tested
    run_sft(scenario, results=results, base_init=True)
    shared = prepare_alignment(scenario, results=results)
    out = {}

    def align(key: str) -> None:
        out[key] = run_alignment(
            scenario,
            CONFIG,
            shared,
            results=results,
            name=key,
            checkpoint_every=2,
            stop_after_steps=STEPS,
        )

    plain = threading.Thread(target=align, args=("uninterrupted",))
    plain.start()
    others = wait_for(train_workers, "the uninterrupted run's worker")
    killed = threading.Thread(target=align, args=("killed",))
    killed.start()
    victim = wait_for(lambda: train_workers() - others, "the second run's worker")
    (pid,) = victim
    runs_dir = scenario_dir(results, scenario) / "runs" / "killed"
    # Written by the Train controller once it has registered a checkpoint (a checkpoint
    # directory alone can still be uploading, and a restart would not know it).
    snapshot = runs_dir / "checkpoint_manager_snapshot.json"
    wait_for(snapshot.exists, "the first registered checkpoint")
    os.kill(pid, signal.SIGKILL)
    killed.join(timeout=600)
    plain.join(timeout=600)
    return out["uninterrupted"], out["killed"], pid, runs_dir


def test_killed_worker_restarts_from_its_last_checkpoint(runs):
    _, killed, pid, runs_dir = runs
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert killed.status == "stopped", killed.error
    steps = [h["step"] for h in killed.history]
    # The history is the restarted attempt's: it begins right after a saved checkpoint
    # (step 2, 4, ...), not at step 1, and runs to the end.
    assert steps[-1] == STEPS
    assert steps[0] > 1 and (steps[0] - 1) % 2 == 0
    assert steps == list(range(steps[0], STEPS + 1))
    assert (runs_dir / f"checkpoint_step_{STEPS:06d}" / "hf").is_dir()


def test_restarted_run_ends_where_the_uninterrupted_run_ends(runs):
    plain, killed, _, _ = runs
    assert plain.status == killed.status == "stopped"
    for key in ("step", "loss", "rewards/accuracy", "rewards/margin", "tokens_seen"):
        torch.testing.assert_close(
            torch.tensor(killed.final[key], dtype=torch.float64),
            torch.tensor(plain.final[key], dtype=torch.float64),
            **TOLERANCE,
            msg=key,
        )
    expected, restarted = hf_weights(plain.path), hf_weights(killed.path)
    assert expected.keys() == restarted.keys()
    diffs = {name: (restarted[name] - t).abs().max().item() for name, t in expected.items()}
    print("max |weight diff| after restart:", max(diffs.values()))
    for name, tensor in expected.items():
        torch.testing.assert_close(restarted[name], tensor, **TOLERANCE, msg=name)
    assert Path(killed.path).is_relative_to(Path(plain.path).parents[2])  # same storage
