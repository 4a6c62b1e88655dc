"""Training curves on TensorBoard, MLflow and W&B (`raydaa search --log-to`), read back
with each one's own reader: TensorBoard's EventAccumulator, an MlflowClient on the SQLite
store, and W&B's offline run file (its protobuf records).

The e2e test runs one `raydaa search` of one SimPO trial (shrunken tiny: 12 steps of 32
pairs, each a logging step; intermediate evaluations at steps 4 and 8 on 8 prompts; the
final one on 16), trained in its driver, so every backend logs live. The controller test
feeds a pickled copy of the curve logger, as Ray Train hands one to the controller of a
run with 2+ workers, and checks what the driver completes from the run's history.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shrunken_search_spaces

from raydaa.io.results_store import read_store

STEPS, EVERY, SUBSET, PROMPTS, PAIRS = 12, 4, 8, 16, 384  # 384 pairs / 32 per step
TRAIN_TAGS = ("train/loss", "train/rewards/margin", "train/rewards/accuracy",
              "train/grad_norm", "train/tokens_per_s", "train/lr")
HPARAMS = {"method": "simpo", "beta": 0.5, "lr": 1e-3}


# --- readers ---------------------------------------------------------------------------

def tensorboard_run(logdir: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_steps(events, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


def tensorboard_hparams(events) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.WhichOneof("data") == "session_start_info":
            hparams = data.session_start_info.hparams
            return {k: (v.string_value or v.number_value) for k, v in hparams.items()}
    return {}


def mlflow_runs(uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id])


def mlflow_steps(client, run, tag: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}


def wandb_records(path: str):
    """The protobuf records of a W&B offline run file (`run-<id>.wandb`): W&B's LevelDB-log
    format, a 7-byte header then 32 KiB blocks of chunks (checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the rest of a block is padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(wandb_dir: str, run_id: str) -> dict:
    """{name, config, history: {step: {key: value}}, summary} of an offline run."""
    [path] = glob.glob(f"{wandb_dir}/wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    run = {"name": None, "config": {}, "history": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["name"] = record.run.display_name
            run["config"] |= {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "config":
            run["config"] |= {u.key: json.loads(u.value_json) for u in record.config.update}
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                     for i in record.history.item}
            run["history"].setdefault(int(items["_step"]), {}).update(items)
        elif kind == "summary":
            run["summary"] |= {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                               for u in record.summary.update}
    return run


def wandb_steps(run: dict, tag: str) -> dict[int, float]:
    return {step: row[tag] for step, row in run["history"].items() if tag in row}


# --- quick checks ----------------------------------------------------------------------

def test_log_to_values():
    from raydaa.sweep.curve_loggers.settings import parse_backends

    assert parse_backends(None) == ("tensorboard",)
    assert parse_backends(["none"]) == ()
    assert parse_backends(["mlflow", "wandb,tensorboard", "mlflow"]) == (
        "mlflow", "wandb", "tensorboard")
    for bad in (["mlfow"], ["none", "wandb"]):
        with pytest.raises(ValueError):
            parse_backends(bad)


def test_missing_library_is_an_error_before_anything_starts(monkeypatch, capsys):
    import importlib.util

    from raydaa.cli.search import search_main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(SystemExit) as exit_:
        search_main(["--method", "dpo", "--log-to", "tensorboard,mlflow"])
    assert exit_.value.code == 2
    assert "pip install 'raydaa[mlflow]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """The module's MLflow store, made once by `prepare_curves` (the default: SQLite in
    <results>/<scenario>/mlflow.db; a new one's schema takes seconds) and its W&B settings."""
    from raydaa.sweep.curve_loggers.settings import prepare_curves

    results = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "WANDB_DIR", "WANDB_PROJECT"):
            mp.delenv(key, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        settings = prepare_curves(("tensorboard", "mlflow", "wandb"), results=str(results),
                                  scenario="tiny")
    assert settings.mlflow_uri == f"sqlite:///{results}/tiny/mlflow.db"
    assert settings.wandb_dir == f"{results}/tiny" and settings.wandb_mode == "offline"
    assert settings.wandb_project == "raydaa-tiny"
    return settings


def the_run(runs, name: str):
    [run] = [r for r in runs if r.info.run_name == name]
    return run


def test_ray_train_run_logs_in_its_controller_and_wandb_at_the_end(tracking, tmp_path,
                                                                    monkeypatch):
    """A run through Ray Train: its callbacks run in its controller, on a copy pickled
    there. TensorBoard and MLflow points come from the copy; W&B's run stays in the
    driver, which logs the steps from the run's history, then every backend's final points."""
    from raydaa.sweep.curve_loggers.logger import CurveLogger
    from raydaa.sweep.curve_loggers.mlflow_run import MLflowCurves
    from raydaa.sweep.curve_loggers.points import hyperparameters
    from raydaa.sweep.curve_loggers.tensorboard import TensorBoardCurves
    from raydaa.sweep.curve_loggers.wandb_run import WandbCurves

    monkeypatch.setenv("WANDB_SILENT", "true")
    hparams = hyperparameters({**HPARAMS, "lambda_": 1.0})
    trial = {"trial": "simpo-b0.5-lr0.001-ctl_00000", "trial_id": "ctl_00000",
             "scenario": "tiny", "hparams": hparams, "tags": {"method": "simpo"}}
    logdir = str(tmp_path / "trial" / "steps")
    driver = CurveLogger([TensorBoardCurves(logdir), MLflowCurves.open(tracking, **trial),
                          WandbCurves.open(tracking, **trial)], hparams)
    history = [{"step": s, "loss": 1.0 / s, "rewards/margin": 0.1 * s, "lr": 1e-3,
                "status": "running"} for s in range(1, 7)]
    history[2] |= {"quality": 0.25, "kl": 0.5}  # an intermediate evaluation at step 3
    controller = pickle.loads(pickle.dumps(driver))  # what Ray Train sends its controller
    for report in history:
        controller.after_report(None, [report], None)
    assert [s.name for s in controller.sinks] == ["tensorboard", "mlflow", "wandb"]
    driver.finish(history, {"status": "finished", "step": 6, "quality": 0.75, "kl": 0.125})

    steps = {s: 1.0 / s for s in range(1, 7)}
    events = tensorboard_run(logdir)
    assert tensorboard_steps(events, "train/loss") == pytest.approx(steps)
    assert tensorboard_steps(events, "eval/quality") == pytest.approx({3: 0.25})
    assert tensorboard_steps(events, "final/quality") == pytest.approx({6: 0.75})
    assert tensorboard_hparams(events)["beta"] == pytest.approx(0.5)

    client, runs = mlflow_runs(tracking.mlflow_uri, "raydaa-tiny")
    run = the_run(runs, trial["trial"])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert mlflow_steps(client, run, "train/loss") == pytest.approx(steps)
    assert mlflow_steps(client, run, "final/kl") == pytest.approx({6: 0.125})
    assert run.data.params["beta"] == "0.5" and run.data.params["method"] == "simpo"

    logged = wandb_run(tracking.wandb_dir, "ctl_00000")
    assert wandb_steps(logged, "train/loss") == pytest.approx(steps)  # from the history
    assert wandb_steps(logged, "eval/quality") == pytest.approx({3: 0.25})
    assert logged["summary"]["quality"] == 0.75 and logged["summary"]["status"] == "finished"


# --- one real sweep --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.deepspeed
def test_search_logs_every_step_to_each_backend(tracking, tmp_path):
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer, tiny_datasets

    # SimPO (no reference cache to score) on 384 of tiny's pairs, 32 a step: 12 steps
    pairs = tmp_path / "pairs.parquet"
    tiny_datasets()["pref_train"].select(range(PAIRS)).to_parquet(pairs)
    spaces = shrunken_search_spaces(
        tmp_path / "search_spaces", "simpo", {"betas": [0.5], "lrs": [1e-3]}, prompts=PROMPTS,
        intermediate_eval={"eval_every": EVERY, "eval_subset_prompts": SUBSET},
        data={"preference": str(pairs)}, align={"global_batch_size": 32, "micro_batch_size": 32},
    )  # fmt: skip
    # a random-init reference (registered as the reference): stage 1 is not under test,
    # and the curves need numbers, not a policy worth judging
    reference = tmp_path / "reference"
    build_tiny_model(seed=0).save_pretrained(reference)
    build_tiny_tokenizer().save_pretrained(reference)
    results, wandb_dir = tmp_path / "results", tmp_path / "wandb"
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "reference.json").write_text(json.dumps(
        {"init": "sft", "fraction": 1.0, "seed": 0, "scenario": "tiny",
         "path": str(reference), "status": "finished"}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"RAYDAA_SEARCH_SPACES": str(spaces), "WANDB_MODE": "offline",
            "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "raydaa.cli", "search", "--method", "simpo", "--results",
         str(results), "--log-to", "tensorboard", "--log-to", "mlflow,wandb",
         "--mlflow-uri", tracking.mlflow_uri],  # the module's store: its schema is made
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "training curves: tensorboard (" in done.stdout and "; wandb (project raydaa-tiny, offline" in done.stdout
    assert "curves stopped" not in done.stderr and "no tensorboard" not in done.stderr
    experiment = results / "tiny" / "tune" / "simpo-two_stage-grid"
    assert "watch it: raydaa dashboard" in done.stdout  # as the sweep starts, and the end:
    assert f"          tensorboard --logdir {experiment}  (training curves)" in done.stdout
    assert f"TensorBoard:      tensorboard --logdir {experiment}  " in done.stdout
    [row] = read_store(results, "tiny", "simpo").to_pylist()
    assert row["status"] == "finished", row["error"]
    [trial_dir] = (results / "tiny" / "tune" / "simpo-two_stage-grid").glob(f"*{row['trial_id']}")
    name, every_step, evaluated = trial_dir.name, list(range(1, STEPS + 1)), [EVERY, 2 * EVERY]
    final = {"final/quality": row["quality"], "final/kl": row["kl"]}

    # TensorBoard: <trial dir>/steps/ beside Tune's own event file in <trial dir>/
    assert list(trial_dir.glob("events.out.tfevents.*"))
    events = tensorboard_run(str(trial_dir / "steps"))
    for tag in TRAIN_TAGS:
        assert sorted(tensorboard_steps(events, tag)) == every_step, tag
    assert sorted(tensorboard_steps(events, "eval/quality")) == evaluated
    for tag, value in final.items():
        assert tensorboard_steps(events, tag) == {STEPS: pytest.approx(value, rel=1e-6)}
    assert tensorboard_hparams(events) == pytest.approx(
        tensorboard_hparams(events) | HPARAMS | {"normalization": "paper"})

    # MLflow: one run named like the trial in experiment raydaa-tiny
    client, runs = mlflow_runs(tracking.mlflow_uri, "raydaa-tiny")
    run = the_run(runs, name)
    assert run.info.status == "FINISHED"
    assert {k: run.data.params[k] for k in HPARAMS} == {k: str(v) for k, v in HPARAMS.items()}
    for tag in TRAIN_TAGS:
        assert sorted(mlflow_steps(client, run, tag)) == every_step, tag
    assert sorted(mlflow_steps(client, run, "eval/kl")) == evaluated
    for tag, value in final.items():
        assert mlflow_steps(client, run, tag) == {STEPS: pytest.approx(value)}
    # the same numbers as TensorBoard's (float32 there)
    assert mlflow_steps(client, run, "train/loss") == pytest.approx(
        tensorboard_steps(events, "train/loss"), rel=1e-6)

    # W&B: one offline run, id the trial id, named like the trial
    logged = wandb_run(str(wandb_dir), row["trial_id"])
    assert logged["name"] == name
    assert {k: logged["config"][k] for k in HPARAMS} == HPARAMS
    for tag in TRAIN_TAGS:
        assert sorted(wandb_steps(logged, tag)) == every_step, tag
    assert sorted(wandb_steps(logged, "eval/quality")) == evaluated
    assert wandb_steps(logged, "final/quality") == {STEPS: pytest.approx(row["quality"])}
    assert logged["summary"]["quality"] == pytest.approx(row["quality"])
    assert logged["summary"]["kl"] == pytest.approx(row["kl"])
    assert logged["summary"]["status"] == "finished"
