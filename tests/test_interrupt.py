"""Ctrl-C is safe: a real SIGINT to `raydaa search`'s process group (what a terminal sends)
at each moment of a sweep's life, then `--resume`, until the sweep completes.

One chain on a real local Ray, in the order a sweep meets the moments: the first build of
DeepSpeed's CPU op (a fresh per-environment build directory), stage 1 (SFT), the
reference cache, a trial's training, a trial's evaluation. After each interrupt: the
command exits promptly saying how to continue, no build lock is left, and every row
written before it is unchanged at the end; at the end every config has exactly one row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import shrunken_search_spaces

from raydaa.io.results_store import read_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

BETAS = [0.1, 0.5]


class Sweep:
    """One `raydaa search` process, its output collected line by line."""

    def __init__(self, env: dict, results: Path) -> None:
        cmd = [sys.executable, "-m", "raydaa.cli", "search", "--method", "dpo", "--results",
               str(results), "--max-concurrent-trials", "1", "--resume"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited before {what}:\n{self.output[-4000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.output[-4000:]}"
            time.sleep(0.2)

    def seen(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # the whole foreground group, as Ctrl-C
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"no exit 120 s after SIGINT:\n{self.output[-4000:]}") from None
        self._reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    spaces = shrunken_search_spaces(
        root / "search_spaces", "dpo", {"betas": BETAS, "lrs": [1e-4]},
        sft={"epochs": 1, "global_batch_size": 64, "micro_batch_size": 64},
    )
    ext = root / "torch_extensions"  # a first build, as on a fresh machine
    env = dict(os.environ, RAYDAA_SEARCH_SPACES=str(spaces), RAYDAA_TORCH_EXTENSIONS_DIR=str(ext),
               PYTHONUNBUFFERED="1")
    return env, root / "results", ext


def rows(results: Path) -> dict[str, dict]:
    return {r["trial_id"]: r for r in read_store(results, "tiny", "dpo").to_pylist()}


def trial_dirs(results: Path) -> list[Path]:
    return sorted((results / "tiny" / "runs").glob("dpo-*"))


def changed(before: dict, after: dict, output: str) -> str:
    """Which rows' keys an interrupt changed, and what the command said (for a failure)."""
    diff = {t: {k: (v, after.get(t, {}).get(k)) for k, v in row.items()
                if v != after.get(t, {}).get(k)} for t, row in before.items()}
    return f"changed: {diff}; new rows: {sorted(set(after) - set(before))}\n{output[-3000:]}"


def interrupted_cleanly(sweep: Sweep, code: int, ext: Path) -> None:
    assert code == 130, f"exit {code}:\n{sweep.output[-4000:]}"
    assert "interrupted" in sweep.output and "--resume" in sweep.output, sweep.output[-3000:]
    assert not list(ext.rglob("lock")), "a build lock was left behind"


def test_ctrl_c_at_every_moment_then_resume_completes_the_sweep(setup):
    env, results, ext = setup

    # 1. during the first build of DeepSpeed's CPU op
    sweep = Sweep(env, results)
    sweep.wait_for(lambda: sweep.seen("building DeepSpeed's CPU op"), "op build")
    time.sleep(3)  # the compiler is running
    interrupted_cleanly(sweep, sweep.interrupt(), ext)

    # 2. during stage 1 (SFT): after its first steps
    sweep = Sweep(env, results)
    sweep.wait_for(lambda: sweep.seen("stage 1 (SFT tiny): step"), "SFT steps", timeout=900)
    assert sweep.seen("built deepspeed_shm_comm")  # the build was redone whole
    interrupted_cleanly(sweep, sweep.interrupt(), ext)
    assert not (results / "tiny" / "reference.json").exists()  # nothing half-registered

    # 3. during the reference cache
    sweep = Sweep(env, results)
    sweep.wait_for(lambda: sweep.seen("reference cache: scoring"), "reference cache", timeout=900)
    interrupted_cleanly(sweep, sweep.interrupt(), ext)
    assert not list((results / "tiny").glob("refcache/*.parquet"))  # no partial cache

    # 4. during the first trial's training
    sweep = Sweep(env, results)
    sweep.wait_for(lambda: len(trial_dirs(results)) >= 1, "a trial", timeout=900)
    # A trial's run folder appears as its run starts; trained in its driver, tiny's
    # 12 steps take about 10 s from there (8 s once let it finish before the Ctrl-C)
    time.sleep(2)
    interrupted_cleanly(sweep, sweep.interrupt(), ext)
    assert rows(results) == {}

    # 5. during the second trial's evaluation, the first trial's row written
    sweep = Sweep(env, results)
    def second_trial_evaluating() -> bool:
        done = rows(results)
        return len(done) == 1 and any(
            list(d.glob("checkpoint_*/hf/config.json"))  # trained: its evaluation runs
            for d in trial_dirs(results) if not any(d.name.endswith(t) for t in done)
        )

    sweep.wait_for(second_trial_evaluating, "the second trial's evaluation", timeout=900)
    kept = rows(results)
    interrupted_cleanly(sweep, sweep.interrupt(), ext)
    assert rows(results) == kept, changed(kept, rows(results), sweep.output)

    # 6. resume to the end
    sweep = Sweep(env, results)
    code = sweep.proc.wait(timeout=900)
    sweep._reader.join(timeout=10)
    assert code == 0, sweep.output[-4000:]
    assert "sweep done" in sweep.output
    final = rows(results)
    assert sorted(r["beta"] for r in final.values()) == BETAS  # exactly one row per config
    assert all(r["status"] == "finished" for r in final.values()), final
    for trial_id, row in kept.items():  # finished before the interrupts: untouched
        assert final[trial_id] == row, changed(kept, final, sweep.output)
