"""A real Prometheus scrapes a real sweep's Ray node, started by `raydaa dashboard`.

A local Ray with its dashboard (so it writes its Prometheus config and service-discovery
file into its session, under a temp dir of this module's own) and a 1 s metrics report
interval; `raydaa dashboard --temp-dir T --scrape-interval 1s --prometheus-port P`
installs raydaa's Grafana dashboard into the session's provisioning folder and starts the
`prometheus` binary (Debian's package; CI installs it, .ci/run) on Ray's config. Then a
tiny two-trial DPO sweep (β 0.1, lr {1e-5, 1e-4}; 512 preference pairs, 1 epoch of 4
steps; an intermediate evaluation at step 2 on 8 prompts; 16 evaluation prompts; the
session's SFT model as the reference) runs in this process as `raydaa search` runs it. Prometheus's HTTP API must
then hold every `ray_raydaa_*` series with the sweep's labels (sweep, scenario, method,
the trials' readable names) and values that agree with the results store, and every
expression of the dashboard must return data for the sweep. `raydaa dashboard --stop`
ends Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import ray
from conftest import shrunken_search_spaces
from s3_server import free_port

from raydaa.dashboards.metrics_stack import DASHBOARD_FILE, dashboard_json
from raydaa.io.results_store import read_store
from raydaa.sweep.telemetry import exported_metrics, trial_name

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

SWEEP = "dpo-two_stage-grid"  # the Tune experiment of `raydaa search --method dpo`
LRS, PAIRS, STEPS = [1e-5, 1e-4], 512, 4  # 512 pairs / 128 per step
RAYDAA = [sys.executable, "-m", "raydaa.cli", "dashboard"]


@pytest.fixture(scope="session")  # set up first: before the SFT model, Ray and the sweep
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("no `prometheus` binary on PATH: this test runs a real one. Install it "
                    "with `apt-get install -y prometheus` (.ci/run does, when it is missing)")
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory, prometheus_binary):
    """A local Ray with its dashboard, in its own short temp dir (unix socket paths)."""
    from raydaa.data.sources import resolve_source

    pairs = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    resolve_source("tiny:pref_train", "train").select(range(PAIRS)).to_json(str(pairs))
    spaces = shrunken_search_spaces(
        tmp_path_factory.mktemp("spaces") / "search_spaces", "dpo",
        {"betas": [0.1], "lrs": LRS}, prompts=16, data={"preference": str(pairs)},
        intermediate_eval={"eval_every": 2, "eval_subset_prompts": 8},
    )  # fmt: skip
    temp_dir = Path(tempfile.mkdtemp(prefix="rdm-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYDAA_SEARCH_SPACES", str(spaces))  # the trial drivers inherit it
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False,
                 dashboard_port=free_port(), _metrics_export_port=free_port(),
                 _temp_dir=str(temp_dir), _system_config={"metrics_report_interval_ms": 1000})
        try:
            latest = temp_dir / "session_latest"
            deadline = time.time() + 60  # the dashboard writes these once it is up
            while not ((latest / "prom_metrics_service_discovery.json").exists()
                       and (latest / "metrics/prometheus/prometheus.yml").exists()):
                assert time.time() < deadline, "Ray's dashboard wrote no Prometheus config"
                time.sleep(0.5)
            yield temp_dir
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def query(url: str, expr: str, path: str = "query", **params) -> list[dict]:
    args = urllib.parse.urlencode({"query": expr, **params})
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{args}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def scrape_targets(url: str) -> dict[str, str]:
    """Prometheus's active targets: scrape URL -> health (up, down, unknown)."""
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=10) as response:
        targets = json.loads(response.read())["data"]["activeTargets"]
    return {t["scrapeUrl"]: t["health"] for t in targets}


def last(url: str, metric: str, matchers: str = f'sweep="{SWEEP}"') -> list[dict]:
    """The last sample of each series (staleness markers aside: the trials' drivers are
    gone by now), over this test's time."""
    return query(url, f"last_over_time({metric}{{{matchers}}}[30m])")


def problems(url: str, names: set[str], started: float) -> list[str]:
    """What Prometheus does not (yet) hold of the sweep; [] when it holds all of it."""
    found = []
    per_trial = ("train_loss", "train_step", "train_total_steps", "tokens_per_second",
                 "eval_quality", "eval_kl", "trial_quality", "trial_kl")
    for metric in (f"ray_raydaa_{m}" for m in per_trial):
        series = last(url, metric)
        if {s["metric"].get("trial") for s in series} != names:
            found.append(f"{metric}: trials {sorted(s['metric'].get('trial') for s in series)}")
        elif any((s["metric"]["method"], s["metric"]["scenario"]) != ("dpo", "tiny") for s in series):
            found.append(f"{metric}: labels {[s['metric'] for s in series]}")
    for metric in ("ray_raydaa_train_step", "ray_raydaa_train_total_steps"):
        values = {s["metric"]["trial"]: float(s["value"][1]) for s in last(url, metric)}
        if values != dict.fromkeys(names, STEPS):
            found.append(f"{metric}: {values}")
    # the progress panel's ratio: both gauges at the same scrapes, the last one 1 (trained)
    ratio = (f'max by (trial) (ray_raydaa_train_step{{sweep="{SWEEP}"}}) / '
             f'max by (trial) (ray_raydaa_train_total_steps{{sweep="{SWEEP}"}})')
    progress = {s["metric"]["trial"]: float(s["values"][-1][1]) for s in
                query(url, ratio, "query_range", start=started, end=time.time(), step=1)}
    if progress != dict.fromkeys(names, 1.0):
        found.append(f"step / total steps: {progress}")
    states = {s["metric"]["state"]: float(s["value"][1])
              for s in last(url, "ray_raydaa_sweep_trials", f'sweep="{SWEEP}", method="dpo"')}
    if states.get("finished") != 2 or states.get("running") != 0 or states.get("pending") != 0:
        found.append(f"ray_raydaa_sweep_trials: {states}")
    done = last(url, "ray_raydaa_trials_done_total", f'sweep="{SWEEP}", status="finished"')
    if sum(float(s["value"][1]) for s in done) != 2:
        found.append(f"ray_raydaa_trials_done_total: {done}")
    # the cache scored every preference pair
    scored, total = ([float(s["value"][1]) for s in last(url, f"ray_raydaa_refcache_pairs_{m}",
                                                            'reference=~".+"')]
                     for m in ("scored", "total"))
    if scored != total or total != [PAIRS]:
        found.append(f"ray_raydaa_refcache_pairs_scored / _total: {scored} / {total}")
    # every expression of the dashboard returns data for this sweep
    dashboard = json.loads(dashboard_json().read_text())
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        for target in panel["targets"]:
            expr = target["expr"].replace("$sweep", SWEEP).replace("$trial", ".*")
            if not query(url, expr, "query_range", start=started, end=time.time(), step=1):
                found.append(f"panel {panel['title']!r}: no data for {expr}")
    return found


def test_prometheus_scrapes_a_sweep_with_its_trial_labels(prometheus_binary, session, tiny_sft,
                                                          tmp_path):
    from raydaa.cli.search import search_main

    latest = (session / "session_latest").resolve()
    port = free_port()
    started = time.time()
    out = subprocess.run(
        [*RAYDAA, "--temp-dir", str(session), "--prometheus-port", str(port),
         "--scrape-interval", "1s"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    pid_file = latest / "metrics" / "prometheus" / "raydaa-prometheus.pid"
    pid = json.loads(pid_file.read_text())["pid"] if pid_file.exists() else None
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        url = f"http://127.0.0.1:{port}"
        assert f"Prometheus: {url} (pid {pid}" in out.stdout
        # where Grafana started on this session's grafana.ini finds dashboards, beside Ray's
        installed = latest / "metrics" / "grafana" / "dashboards" / DASHBOARD_FILE
        assert installed.read_bytes() == dashboard_json().read_bytes()
        assert (installed.parent / "default_grafana_dashboard.json").exists()
        assert f"--config {latest / 'metrics/grafana/grafana.ini'}" in out.stdout
        assert re.search(r"scrape_interval: 1s",
                         (latest / "metrics/prometheus/raydaa-prometheus.yml").read_text())
        # Ray's service discovery lists the node's metrics agent, and Prometheus scrapes it
        node = ray.nodes()[0]
        agent = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        deadline = time.time() + 30
        while agent not in (scraped := scrape_targets(url)):
            assert time.time() < deadline, scraped
            time.sleep(0.5)

        results = tmp_path / "results"
        (results / "tiny").mkdir(parents=True)  # the session's SFT model as the reference
        (results / "tiny" / "reference.json").write_text(json.dumps(
            {"init": "sft", "fraction": 1.0, "seed": 0, "scenario": "tiny",
             "path": tiny_sft[2], "status": "finished"}))  # fmt: skip
        assert search_main(["--method", "dpo", "--results", str(results)]) == 0

        rows = read_store(results, "tiny", "dpo").to_pylist()
        assert sorted(r["status"] for r in rows) == ["finished", "finished"], rows
        names = {trial_name({k: r[k] for k in ("method", "beta", "lr")}, r["trial_id"])
                 for r in rows}
        deadline = time.time() + 45  # the last gauges: 1 s to the agent, 1 s to a scrape
        while found := problems(url, names, started):
            assert time.time() < deadline, "\n".join(found)
            time.sleep(1)
        quality = {s["metric"]["trial"]: float(s["value"][1])
                   for s in last(url, "ray_raydaa_trial_quality")}
        for row in rows:  # the gauge is the store's number
            name = trial_name({k: row[k] for k in ("method", "beta", "lr")}, row["trial_id"])
            assert quality[name] == pytest.approx(row["quality"], abs=1e-9)
        assert set(exported_metrics()) <= {
            s["metric"]["__name__"] for s in query(url, '{__name__=~"ray_raydaa_.*"}[30m]')}

        stop = subprocess.run([*RAYDAA, "--temp-dir", str(session), "--stop"],
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and f"stopped Prometheus (pid {pid})" in stop.stdout, stop
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if pid is not None and psutil.pid_exists(pid):  # never left running
            process = psutil.Process(pid)
            if "prometheus" in " ".join(process.cmdline()[:1]):
                process.kill()
