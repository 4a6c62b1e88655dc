"""Where a training run's wall time goes, as seen by one worker: named moments (epoch
seconds) that the run's result carries back, so a trial can say how long its start-up,
model and engine set-up, training, final save and teardown took (`phase_seconds`)."""

from __future__ import annotations

import time

import psutil

from raydaa.io.results_store import PHASE_COLUMNS

PROCESS_START = "process_start"
"""The worker process was created (Ray started it for this run); for a run in the calling
process (raydaa/train/in_process.py), the moment that run was started."""
LOOP_START = "loop_start"
"""The training function began: imports done, process group up."""
TRAINING_START = "training_start"
"""Model loaded, DeepSpeed initialised, checkpoint (if any) restored, data loaded."""
TRAIN_END = "train_end"
"""The last step's update done, before its checkpoint."""
SAVED = "saved"
"""The final checkpoint (and HF export) reported to Ray Train."""


PHASES = PHASE_COLUMNS
"""A trial's phases, in order (`phase_seconds`): columns of the results store."""


def marks(process_start: float | None = None) -> dict[str, float]:
    """A new timeline, opened with the process's creation (or `process_start`, for a
    process that was not created for this run) and now (loop start)."""
    start = psutil.Process().create_time() if process_start is None else process_start
    return {PROCESS_START: start, LOOP_START: time.time()}


def phase_seconds(timeline: dict[str, float], *, started: float, returned: float,
                  evaluated: float | None = None) -> dict[str, float | None]:
    """Durations of a trial's phases from its worker's timeline and the trial's own moments
    (`started`: the trial began; `returned`: the training run returned; `evaluated`: its
    evaluation ended). A phase whose ends are missing is None (a run that failed early)."""
    points = [("started", started), (PROCESS_START, timeline.get(PROCESS_START)),
              (LOOP_START, timeline.get(LOOP_START)), (TRAINING_START, timeline.get(TRAINING_START)),
              (TRAIN_END, timeline.get(TRAIN_END)), (SAVED, timeline.get(SAVED)),
              ("returned", returned), ("evaluated", evaluated)]
    at = dict(points)

    def span(a: str, b: str) -> float | None:
        return None if at[a] is None or at[b] is None else max(0.0, at[b] - at[a])

    return {
        # Ray Train controller, worker placement and process start (in process: ~0)
        "launch_seconds": span("started", PROCESS_START),
        # the worker's imports (torch, transformers, DeepSpeed) and the process group
        # (in process: the process group, once per process)
        "imports_seconds": span(PROCESS_START, LOOP_START),
        # op check, model load, deepspeed.initialize, checkpoint restore, data load
        "engine_seconds": span(LOOP_START, TRAINING_START),
        "train_seconds": span(TRAINING_START, TRAIN_END),
        "save_seconds": span(TRAIN_END, SAVED),
        # from the final report to the run's result in the trial: Ray Train shutting down
        "teardown_seconds": span(SAVED, "returned"),
        "eval_seconds": span("returned", "evaluated"),
    }
