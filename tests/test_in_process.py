"""A one-worker CPU run in the calling process (raydaa/train/in_process.py) does what Ray
Train did for it: checkpoints in storage (the latest `num_to_keep`), a run started again
under its name resumes from its last one, an error restarts the loop from it
(`max_failures`), callbacks see every report. The runs are tiny_llama's six steps
(tests/test_train_engine.py); `reference` is one uninterrupted run, to which the others
must come out equal (same process, same float32 operations: observed bit-exact)."""

from __future__ import annotations

import pytest
import torch
from test_train_engine import BASE, STEPS, causal_lm_loss, losses, random_tokens, tiny_llama

from raydaa.config.scenario import ResourcesConfig
from raydaa.io import storage
from raydaa.train import TrainSettings, run_training
from raydaa.train.in_process import COMPLETE, checkpoints, latest_checkpoint, trains_in_process

RESUMED_TOL = {"rtol": 1e-6, "atol": 1e-7}


def test_which_runs_train_in_process():
    assert trains_in_process(ResourcesConfig())  # tiny's: one CPU worker
    assert not trains_in_process(ResourcesConfig(num_workers=2))
    assert not trains_in_process(ResourcesConfig(in_process=False))
    assert not trains_in_process(ResourcesConfig(use_gpu=True))
    assert trains_in_process(TrainSettings(total_steps=1, global_batch_size=1))
    with pytest.raises(ValueError, match="in_process"):
        ResourcesConfig(in_process="yes")


def test_only_complete_checkpoints_count_newest_last(storage_root):
    run = storage.join(storage_root, "run")
    for step, complete in ((2, True), (10, True), (12, False)):  # 12: cut short
        directory = storage.join(run, f"checkpoint_step_{step:06d}")
        storage.write_text(storage.join(directory, "state.txt"), str(step))
        if complete:
            storage.write_text(storage.join(directory, COMPLETE), "")
    found = checkpoints(run)
    assert [p.rsplit("_", 1)[1] for p in found] == ["000002", "000010"]  # by step, not name
    latest = latest_checkpoint(run)
    with latest.as_directory() as local:
        assert open(f"{local}/state.txt").read() == "10"
    assert latest_checkpoint(storage.join(storage_root, "nothing-here")) is None


class Recorder:
    """A Ray Train UserCallback that keeps what it is given."""

    def __init__(self) -> None:
        self.reports: list[tuple[dict, object]] = []

    def after_report(self, run_context, metrics, checkpoint) -> None:
        assert len(metrics) == 1  # one rank
        self.reports.append((metrics[0], checkpoint))


def failing_once_loss(engine, batch, *, at_call: int, state: dict):
    state["calls"] = state.get("calls", 0) + 1
    if state["calls"] == at_call:
        raise RuntimeError("a worker error, once")
    return causal_lm_loss(engine, batch)


def run(root, name, *, loss_fn=causal_lm_loss, max_failures=0, callbacks=(), **settings):
    return run_training(
        TrainSettings(**{**BASE, "micro_batch_size": 4, **settings}),
        model_fn=tiny_llama, loss_fn=loss_fn, dataset=random_tokens(), name=name,
        storage_path=root, max_failures=max_failures, callbacks=callbacks)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("in_process_runs"))


@pytest.fixture(scope="module")
def reference(ray_cluster, root):
    recorder = Recorder()
    result = run(root, "reference", checkpoint_every=2, callbacks=[recorder])
    return result, recorder


@pytest.mark.ray
@pytest.mark.deepspeed
def test_checkpoints_are_kept_as_ray_train_keeps_them(reference, root):
    result, recorder = reference
    assert result.return_value["status"] == "finished"
    assert result.path == storage.join(root, "reference")
    # checkpoints at 2, 4, 6; Ray Train's num_to_keep=2 keeps the last two
    kept = [p.rsplit("_", 1)[1] for p in checkpoints(result.path)]
    assert kept == ["000004", "000006"]
    assert [m["step"] for _, m in result.best_checkpoints] == [4, STEPS]
    assert result.checkpoint.path == checkpoints(result.path)[-1]
    assert storage.exists(f"{result.checkpoint.path}/hf/config.json")
    # every report reached the callback, the checkpointed ones with their checkpoint
    assert [m["step"] for m, _ in recorder.reports] == list(range(1, STEPS + 1))
    with_checkpoint = [m["step"] for m, c in recorder.reports if c is not None]
    assert with_checkpoint == [2, 4, 6]


@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_run_started_again_under_its_name_resumes_from_its_last_checkpoint(reference, root):
    stopped = run(root, "again", checkpoint_every=2, stop_after_steps=4)
    assert stopped.return_value["status"] == "stopped"
    resumed = run(root, "again", checkpoint_every=2)  # a Tune retry, or --resume
    assert [h["step"] for h in resumed.return_value["history"]] == [5, 6]
    assert resumed.return_value["status"] == "finished"
    torch.testing.assert_close(losses(resumed), losses(reference[0], {5, 6}), **RESUMED_TOL)
    # started again once finished (its trial retried): nothing to train, and its last
    # report, loss and tokens seen included, is what it says (not a loss-less row)
    again = run(root, "again", checkpoint_every=2)
    final = resumed.return_value["history"][-1]
    assert again.return_value["history"] == [final]
    assert again.metrics == final and final["loss"] == final["loss"]  # not NaN


@pytest.mark.ray
@pytest.mark.deepspeed
def test_an_error_restarts_the_loop_from_the_last_checkpoint(reference, root):
    from functools import partial

    # call 5 is step 5's forward: the run restarts from step 4's checkpoint
    loss = partial(failing_once_loss, at_call=5, state={})
    result = run(root, "restarted", loss_fn=loss, max_failures=1, checkpoint_every=2)
    out = result.return_value
    assert out["status"] == "finished"
    assert [h["step"] for h in out["history"]] == [5, 6]  # this attempt's reports
    torch.testing.assert_close(losses(result), losses(reference[0], {5, 6}), **RESUMED_TOL)


@pytest.mark.ray
@pytest.mark.deepspeed
def test_a_finished_run_leaves_no_engine_in_the_process(reference):
    """A reused trial driver trains run after run: each run's DeepSpeed engine (model,
    optimizer state) must be freed when it ends."""
    import gc

    from deepspeed.runtime.engine import DeepSpeedEngine

    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, DeepSpeedEngine)]


@pytest.mark.ray
@pytest.mark.deepspeed
def test_without_restarts_the_error_is_raised(reference, root):
    from functools import partial

    with pytest.raises(RuntimeError, match="a worker error, once"):
        run(root, "no-restarts", loss_fn=partial(failing_once_loss, at_call=2, state={}),
            max_failures=0)


def test_a_trial_driver_holds_the_cpus_of_the_run_it_trains():
    from raydaa.sweep.tuner import DRIVER_RESOURCES, driver_resources

    assert driver_resources(ResourcesConfig(cpus_per_worker=2))["CPU"] == 2.0
    assert driver_resources(ResourcesConfig(num_workers=2)) == DRIVER_RESOURCES  # Ray Train's
    assert DRIVER_RESOURCES["CPU"] == 0
