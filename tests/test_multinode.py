"""A sweep on a multi-node Ray cluster on one machine (ray.cluster_utils.Cluster), its
results, SFT checkpoint and reference cache on S3 (a real S3 server, moto, over HTTP):

    head      0 CPUs, the dashboard, this process as the sweep's driver
    worker_1  1 CPU (custom resource worker_1)
    worker_2  1 CPU (worker_2), removed while its trial trains
    worker_3  1 CPU (worker_3), added right after the removal

Two DPO trials (tiny shrunk to 768 preference pairs: 6 steps of 128, a checkpoint every
2 steps; 16 evaluation prompts) run one per worker node. When worker_2's training worker
is up and a run has checkpointed, worker_2 is killed: its trial's Train run restarts
(resources.max_failures = 1) and the sweep completes with one row per config. The
dashboard's HTTP API (Train V2 state) lists both runs by their readable names, and the
nodes' Prometheus endpoints carry the raydaa_* metrics.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from conftest import shrunken_search_spaces
from s3_server import free_port, s3_server

from raydaa.config.scenario import load_scenario
from raydaa.io import storage
from raydaa.io.prompt_records import read_records
from raydaa.io.results_store import read_store
from raydaa.sweep.telemetry import trial_name
from raydaa.train.stages import reference_record, run_sft

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

ROOT = "s3://raydaa/sweep"
LRS = [1e-5, 1e-4]
PAIRS = 768


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """S3 server, a shrunken tiny scenario, and the Ray settings every node inherits."""
    from raydaa.data.sources import resolve_source

    pairs = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    resolve_source("tiny:pref_train", "train").select(range(PAIRS)).to_json(str(pairs))
    spaces = shrunken_search_spaces(
        tmp_path_factory.mktemp("spaces") / "search_spaces",
        "dpo",
        {"betas": [0.1], "lrs": LRS},
        prompts=16,
        data={"preference": str(pairs)},
        # through Ray Train: the loss under test is a Train worker's node (a one-worker
        # run in its trial's driver is covered by tests/test_in_process.py)
        resources={"checkpoint_every": 2, "in_process": False},
    )
    with s3_server() as aws, pytest.MonkeyPatch.context() as mp:
        for key, value in aws.items():
            mp.setenv(key, value)
        mp.setenv("RAYDAA_SEARCH_SPACES", str(spaces))
        mp.setenv("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")  # Train runs in the dashboard
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        mp.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        mp.setenv("RAY_TRAIN_METRICS_ENABLED", "0")
        mp.chdir(tmp_path_factory.mktemp("cwd"))  # so a stray relative path would show
        yield


@pytest.fixture(scope="module")
def cluster(env):
    from ray.cluster_utils import Cluster

    head = {
        "num_cpus": 0,
        "include_dashboard": True,
        "dashboard_port": free_port(),  # never 8265: another Ray may be running here
        "metrics_export_port": free_port(),
        "_system_config": {"metrics_report_interval_ms": 1000},
    }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.dashboard_port = head["dashboard_port"]
    cluster.workers = {
        name: cluster.add_node(num_cpus=1, resources={name: 1}, metrics_export_port=free_port())
        for name in ("worker_1", "worker_2")
    }
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def scrape_metrics() -> str:
    """Prometheus text of every alive node's metrics agent."""
    texts = []
    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
            try:
                texts.append(urllib.request.urlopen(url, timeout=10).read().decode())
            except OSError:
                pass
    return "\n".join(texts)


EXPORTED = ("trial_quality", "trial_kl", "trials_done", "tokens_per_second", "train_loss")


def scrape_until_exported(timeout_s: float = 60.0) -> str:
    """The driver's last gauges reach its node's agent one report interval (1 s) after
    they are set, so a scrape right at the sweep's end can miss them: scrape until every
    raydaa metric shows or the time is up (the test then names the missing one)."""
    deadline = time.time() + timeout_s
    while True:
        text = scrape_metrics()
        lines = text.splitlines()
        exported = all(any(line.startswith(f"ray_raydaa_{m}") for line in lines) for m in EXPORTED)
        if exported or time.time() > deadline:
            return text
        time.sleep(1.0)


def remove_worker_2_while_it_trains(cluster, seen: dict) -> None:
    """Waits for a Train worker on worker_2 and a first checkpoint, kills worker_2, adds
    worker_3; records the Train workers' nodes and the metrics seen meanwhile."""
    from ray.util.state import list_actors

    victim = cluster.workers["worker_2"]
    runs = storage.join(ROOT, "tiny", "runs")
    deadline = time.time() + 600
    while time.time() < deadline:
        actors = list_actors(
            filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
        )
        seen["train_nodes"] |= {a.node_id for a in actors}
        checkpointed = any("checkpoint_step_" in f for f in storage.list_files(runs))
        if checkpointed and victim.node_id in seen["train_nodes"]:
            seen["metrics"] += scrape_metrics()
            cluster.remove_node(victim, allow_graceful=False)
            seen["removed"] = victim.node_id
            cluster.workers["worker_3"] = cluster.add_node(
                num_cpus=1, resources={"worker_3": 1}, metrics_export_port=free_port()
            )
            return
        time.sleep(0.5)
    seen["error"] = "worker_2 never trained with a checkpoint in storage"


@pytest.fixture(scope="module")
def sweep(cluster):
    from raydaa.sweep.search import SearchSettings, run_search

    run_sft(load_scenario("tiny"), results=ROOT, base_init=True)  # reference: the base model
    seen = {"train_nodes": set(), "metrics": "", "removed": None}
    out = {}

    def search() -> None:
        try:
            out["where"] = run_search(
                SearchSettings(method="dpo", results=ROOT, max_concurrent_trials=2)
            )
        except BaseException as err:  # re-raised below, in the test
            out["error"] = err

    # The sweep runs in a thread: Ray adds nodes only from the main thread (signal handlers).
    sweeper = threading.Thread(target=search)
    sweeper.start()
    remove_worker_2_while_it_trains(cluster, seen)
    sweeper.join(timeout=900)
    assert not sweeper.is_alive(), "the sweep did not end within 15 min"
    if "error" in out:
        raise out["error"]
    seen["metrics"] += scrape_until_exported()
    return out["where"], seen


def test_node_loss_leaves_exactly_one_row_per_config(sweep):
    where, seen = sweep
    assert "error" not in seen, seen.get("error")
    assert seen["removed"] is not None
    rows = read_store(ROOT, "tiny").to_pylist()
    assert where["results_store"] == f"{ROOT}/tiny/store"
    assert sorted(r["lr"] for r in rows) == LRS  # one row per config, none twice
    assert len({r["trial_id"] for r in rows}) == len(LRS)
    for row in rows:
        assert row["status"] == "finished", row["error"]
        assert 0 <= row["quality"] <= 1 and row["kl_k3"] >= 0
        assert row["tokens_seen"] > 0


def test_trials_ran_on_several_nodes_and_ended_on_live_ones(sweep, cluster):
    _, seen = sweep
    worker_ids = {name: node.node_id for name, node in cluster.workers.items()}
    # worker_1 and worker_2 both trained at once before the removal
    assert {worker_ids["worker_1"], worker_ids["worker_2"]} <= seen["train_nodes"]
    rows = read_store(ROOT, "tiny").to_pylist()
    final_nodes = {r["node_id"] for r in rows}
    assert final_nodes <= {worker_ids["worker_1"], worker_ids["worker_3"]}
    assert seen["removed"] == worker_ids["worker_2"] not in final_nodes
    assert all(r["hostname"] for r in rows)


def test_trials_read_reference_and_cache_through_storage(sweep):
    reference = reference_record(ROOT, load_scenario("tiny"))
    assert reference["path"] == f"{ROOT}/tiny/base"
    for row in read_store(ROOT, "tiny").to_pylist():
        assert row["reference_path"] == reference["path"]
        assert row["reference_cache"].startswith(f"{ROOT}/tiny/refcache/")
        assert storage.exists(row["reference_cache"])
        assert row["checkpoint_path"].startswith(f"{ROOT}/tiny/runs/")
        assert storage.exists(storage.join(row["checkpoint_path"], "config.json"))
        # per-prompt records on S3 beside the store: one per evaluation prompt
        assert read_records(ROOT, "tiny", "dpo", row["trial_id"]).num_rows == 16
    assert not any(Path.cwd().iterdir())  # nothing written to a node-local relative path


def dashboard(cluster, endpoint: str):
    """GET a dashboard endpoint, with Ray's auth token when token auth is on (Ray 2.60
    turns it on for a local `ray.init()`, e.g. an earlier test module's, in this process)."""
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    url = f"http://127.0.0.1:{cluster.dashboard_port}{endpoint}"
    request = urllib.request.Request(url, headers=get_auth_headers_if_auth_enabled({}))
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def test_dashboard_lists_train_runs_by_readable_name(sweep, cluster):
    """Ray 2.60's dashboard serves Train V2 runs (name, attempts, workers) at
    /api/train/v2/runs/v1; the run that lost its node has a second attempt (of its own,
    or of a second run that Tune's retry of the trial started)."""
    # a trial Tune retries starts a second Train run under the same name: gather every
    # attempt of every run a name has, oldest first
    runs = {}
    for run in dashboard(cluster, "/api/train/v2/runs/v1")["train_runs"]:
        runs.setdefault(run["name"], []).extend(run["attempts"])
    runs = {name: sorted(attempts, key=lambda a: a["start_time_ns"])
            for name, attempts in runs.items()}
    rows = read_store(ROOT, "tiny").to_pylist()
    for row in rows:
        # the row's seed is the scenario's: these trials are no seed replicates, whose
        # configs (and so names) carry a seed of their own
        name = trial_name(row | {"seed": None}, row["trial_id"])
        assert name.startswith(f"dpo-b0.1-lr{row['lr']:g}-")
        assert name in runs, sorted(runs)
        last = runs[name][-1]
        assert [w["node_id"] for w in last["workers"]] == [row["node_id"]]
    attempts = sorted(len(a) for a in runs.values())
    assert attempts[-1] >= 2  # the run on worker_2 was restarted elsewhere
    nodes = dashboard(cluster, "/nodes?view=summary")["data"]["summary"]
    assert len(nodes) >= 3


def test_metrics_are_exported_for_prometheus(sweep):
    _, seen = sweep
    text = seen["metrics"]
    for metric in EXPORTED:
        lines = [line for line in text.splitlines() if line.startswith(f"ray_raydaa_{metric}")]
        assert lines, f"ray_raydaa_{metric} not exported"
        assert all('method="dpo"' in line and 'scenario="tiny"' in line for line in lines)
    done = [line for line in text.splitlines() if line.startswith("ray_raydaa_trials_done")]
    assert any('status="finished"' in line for line in done)
