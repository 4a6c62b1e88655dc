"""A trial's phases from its worker's moments and its own (raydaa.train.timeline)."""

import pytest

from raydaa.io.results_store import SCHEMA
from raydaa.train import timeline
from raydaa.train.timeline import PHASES, phase_seconds

MARKS = {timeline.PROCESS_START: 103.0, timeline.LOOP_START: 110.0,
         timeline.TRAINING_START: 113.5, timeline.TRAIN_END: 130.0, timeline.SAVED: 131.0}


def test_each_phase_is_the_time_between_its_two_moments():
    got = phase_seconds(MARKS, started=100.0, returned=133.0, evaluated=136.0)
    assert got == {"launch_seconds": 3.0, "imports_seconds": 7.0, "engine_seconds": 3.5,
                   "train_seconds": 16.5, "save_seconds": 1.0, "teardown_seconds": 2.0,
                   "eval_seconds": 3.0}
    assert tuple(got) == PHASES
    assert sum(got.values()) == pytest.approx(136.0 - 100.0)


def test_a_run_that_failed_before_training_has_only_what_it_reached():
    early = {k: MARKS[k] for k in (timeline.PROCESS_START, timeline.LOOP_START)}
    got = phase_seconds(early, started=100.0, returned=112.0)
    assert got["launch_seconds"] == 3.0 and got["imports_seconds"] == 7.0
    assert all(got[k] is None for k in ("engine_seconds", "train_seconds", "save_seconds",
                                        "teardown_seconds", "eval_seconds"))


def test_every_phase_is_a_results_store_column():
    assert set(PHASES) <= set(SCHEMA.names)
