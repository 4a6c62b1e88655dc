"""`raydaa search --scheduler asha` end to end, on a shrunken tiny scenario with
intermediate evaluations: trials evaluate their current policy every 2 steps on 16
prompts, ASHA (grace period 1 evaluation, reduction factor 2) stops the weak ones, and
the store, Tune's results and the Ray processes show what happened.

The grid (lr 3e-2; β in {1e-30, 0.1}; 1 or 2 epochs of 12 steps) runs one trial at a time
in Tune's order: (β 1e-30, 1 epoch), (0.1, 1), (1e-30, 2), (0.1, 2). With β 1e-30 the DPO
gradient is ~1e-30 and Adam's step ~lr x 1e-22 (its ε 1e-8 dominates): no fp32 weight of
the SFT model moves, so those trials keep the reference policy (KL 0, the same quality at
every rung); with β 0.1, lr 3e-2 wrecks the policy within two Adam steps. The first trial
has no rival and finishes; each wrecked one falls below the rung's median at step 2 and is
stopped there; the 24-step trial after the first stop ties the first trial at every rung
and finishes, and while it trains the stopped trial's driver (where it trained) must be gone. The
reference is the session's SFT model of tiny (conftest's `tiny_sft`: a policy with
answers worth judging; a random-init one ties everything).
"""

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest
from conftest import shrunken_search_spaces

from raydaa.io.prompt_records import read_records
from raydaa.io.results_store import read_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

EPOCH_STEPS, EVERY, SUBSET, PROMPTS = 12, 2, 16, 48  # 1500 pairs / 128 per step -> 12 steps
REASON = re.compile(r"stopped by asha at step (\d+) \(quality ([0-9.]+) on 16 prompts\)")


@pytest.fixture(scope="module")
def spaces(tmp_path_factory):
    root = tmp_path_factory.mktemp("spaces") / "search_spaces"
    return shrunken_search_spaces(
        root, "dpo", {"betas": [1e-30, 0.1], "lrs": [3e-2], "epochs": [1, 2]}, prompts=PROMPTS,
        intermediate_eval={"eval_every": EVERY, "eval_subset_prompts": SUBSET},
        early_stopping={"grace_period": 1, "reduction_factor": 2},
    )  # fmt: skip


def train_processes(root: psutil.Process) -> dict[str, set[int]]:
    """PIDs of live trial drivers (Tune's ImplicitFunc: tiny's one-worker runs train in
    them) and Ray Train controllers and workers among the sweep's processes (its local
    Ray's workers are its descendants; their titles are the actor class)."""
    pids: dict[str, set[int]] = {"ImplicitFunc": set(), "TrainController": set(),
                                 "RayTrainWorker": set()}
    for child in root.children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:  # it ended while we looked
            continue
        for name, found in pids.items():
            if title.startswith(f"ray::{name}"):
                found.add(child.pid)
    return pids


def test_asha_prunes_weak_trials_and_their_runs_end(spaces, tiny_sft, tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, RAYDAA_SEARCH_SPACES=str(spaces))
    raydaa = [sys.executable, "-m", "raydaa.cli"]
    # the session's SFT model as the registered reference: stage 1 is not under test here
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "reference.json").write_text(json.dumps(
        {"init": "sft", "fraction": 1.0, "seed": 0, "scenario": "tiny", "path": tiny_sft[2],
         "status": "finished"}))

    log = tmp_path / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*raydaa, "search", "--method", "dpo", "--scheduler", "asha",
             "--max-concurrent-trials", "1", "--results", str(results)],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        # While it runs: once a trial was pruned, its training must be gone (its driver,
        # where its one-worker run trains).
        root, samples, first_pruned = psutil.Process(proc.pid), [], None
        deadline = time.time() + 2400
        while proc.poll() is None:
            assert time.time() < deadline, log.read_text()[-3000:]
            statuses = read_store(results, "tiny", "dpo").column("status").to_pylist()
            if first_pruned is None and "pruned" in statuses:
                first_pruned = time.time()
            samples.append((time.time(), train_processes(root)))
            time.sleep(2)
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert "trials_ended     4 of 4" in output, output[-3000:]

    rows = {(r["beta"], r["epochs"]): r for r in read_store(results, "tiny", "dpo").to_pylist()}
    assert sorted(rows) == [(1e-30, 1), (1e-30, 2), (0.1, 1), (0.1, 2)]
    statuses = {key: row["status"] for key, row in rows.items()}
    assert statuses == {(1e-30, 1): "finished", (0.1, 1): "pruned", (1e-30, 2): "finished",
                        (0.1, 2): "pruned"}, statuses
    pruned = [row for row in rows.values() if row["status"] == "pruned"]

    # Every driver alive up to the first prune (the first trial's, the pruned one's) is
    # gone 45 s later, and no Train run was ever started for a one-worker trial. Counts
    # would not do: one trial's driver can still be exiting while the next one's starts.
    assert first_pruned, output[-3000:]
    before = set().union(*(p["ImplicitFunc"] for when, p in samples if when <= first_pruned))
    later = [p for when, p in samples if when > first_pruned + 45]
    assert before and later, "no trial ran after the first pruned one: nothing to watch"
    assert not [p["ImplicitFunc"] & before for p in later if p["ImplicitFunc"] & before]
    assert not [p for _, p in samples if p["TrainController"] or p["RayTrainWorker"]]

    experiment = results / "tiny" / "tune" / "dpo-two_stage-grid"
    # never a reused driver under a scheduler: Tune would keep a stopped trial's driver,
    # its Train run still training, for the next trial
    drivers = {json.loads(line)["pid"] for f in experiment.glob("*/result.json") for line in f.open()}
    assert len(drivers) == 4, drivers
    for row in rows.values():
        trial_dir = next(experiment.glob(f"*-{row['trial_id']}"))
        tune_results = [json.loads(line) for line in (trial_dir / "result.json").open()]
        intermediate = [r for r in tune_results if r.get("status") == "running"]
        # every result Tune saw before the last is an intermediate evaluation on the subset
        assert intermediate and all(r["eval_prompts"] == SUBSET for r in intermediate)
        assert all(0 <= r["quality_low"] <= r["quality"] <= r["quality_high"] <= 1
                   for r in intermediate)
        assert [r["step"] for r in intermediate] == list(
            range(EVERY, intermediate[-1]["step"] + 1, EVERY))
        steps = EPOCH_STEPS * row["epochs"]
        final_checkpoint = results / "tiny" / "runs" / trial_dir.name / f"checkpoint_step_{steps:06d}"
        if row["status"] == "finished":
            assert tune_results[-1]["status"] == "finished"
            assert [r["step"] for r in intermediate] == list(range(EVERY, steps, EVERY))
            assert row["eval_prompts"] == PROMPTS and row["eval_step"] == steps
            assert final_checkpoint.is_dir() and row["checkpoint_path"]
            assert read_records(results, "tiny", "dpo", row["trial_id"]).num_rows == PROMPTS
            continue
        # pruned: the row is its last intermediate evaluation, nothing came after it
        last = tune_results[-1]
        assert last is intermediate[-1] and last["step"] < steps
        step, quality = REASON.fullmatch(row["error"]).groups()
        assert int(step) == row["eval_step"] == last["step"]
        assert float(quality) == pytest.approx(row["quality"], abs=1e-3)  # printed to 3 digits
        for key in ("quality", "quality_low", "quality_high", "kl", "kl_k3", "tokens_seen"):
            assert row[key] == pytest.approx(last[key], rel=1e-12), key
        assert row["eval_prompts"] == SUBSET and row["checkpoint_path"] == ""
        assert row["final_loss"] == pytest.approx(last["loss"], rel=1e-12)
        assert read_records(results, "tiny", "dpo", row["trial_id"]) is None
        assert not final_checkpoint.exists(), "the stopped trial's run trained on to its end"
    for key in ((1e-30, 1), (1e-30, 2)):  # β 1e-30 left the reference as it was
        assert abs(rows[key]["kl"]) <= 1e-9 and abs(rows[key]["kl_k3"]) <= 1e-9, rows[key]
    report = (results / "tiny" / "report" / "report.md").read_text()
    assert "## Pruned trials" in report and f"{len(pruned)} pruned" in report
