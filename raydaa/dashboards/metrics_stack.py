"""Prometheus and Grafana for the Ray session running on this machine, the way Ray lays
them out: Ray's dashboard writes, under `<session>/metrics/`,

    prometheus/prometheus.yml                 scrapes every node's metrics agent, listed in
                                              <session>/prom_metrics_service_discovery.json
                                              (rewritten every 5 s while Ray runs)
    grafana/grafana.ini                       for `grafana-server --config`
    grafana/provisioning/dashboards/default.yml   loads every JSON in grafana/dashboards/
                                              (or $RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR)
    grafana/provisioning/datasources/default.yml  Prometheus at $RAY_PROMETHEUS_HOST
                                              (default http://localhost:9090)

`install_dashboard` copies raydaa's dashboard where that provisioning looks, and
`start_prometheus` runs a `prometheus` binary on Ray's config, detached, with its pid in
`prometheus/raydaa-prometheus.pid` so that `stop_prometheus` ends it (and only it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

DASHBOARD_FILE = "raydaa_sweeps_grafana_dashboard.json"
DASHBOARD_UID = "raydaaSweeps"
DISCOVERY_FILE = "prom_metrics_service_discovery.json"
STALE_S = 30.0
"""A session whose discovery file is older than this has no Ray running (Ray's dashboard
rewrites it every 5 s)."""
PID_FILE = "raydaa-prometheus.pid"
INSTALL_HINT = (
    "install it: `apt-get install prometheus` (Debian/Ubuntu; do not start its system "
    "service, raydaa runs the binary itself), `brew install prometheus` (macOS), or let Ray "
    "download one: `ray metrics launch-prometheus` (it scrapes the default /tmp/ray session)"
)


class MetricsStackError(Exception):
    """What is missing, and what to do about it (the command prints it)."""


def dashboard_json() -> Path:
    """The shipped Grafana dashboard."""
    return Path(__file__).with_name(DASHBOARD_FILE)


def ray_temp_dir() -> Path:
    """Ray's root temporary directory as Ray picks it (ray._common.utils'
    get_default_ray_temp_dir): $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp; + `ray`."""
    base = os.environ.get("RAY_TMPDIR")
    if base is None:
        base = os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    return Path(base or "/tmp") / "ray"


@dataclass(frozen=True)
class RaySession:
    path: Path  # the session directory, resolved (never the session_latest link)

    @property
    def metrics(self) -> Path:
        return Path(os.environ.get("RAY_METRICS_OUTPUT_ROOT") or self.path / "metrics")

    @property
    def discovery(self) -> Path:
        return self.path / DISCOVERY_FILE

    @property
    def prometheus_config(self) -> Path:
        return self.metrics / "prometheus" / "prometheus.yml"

    def discovery_age(self, now: float | None = None) -> float | None:
        """Seconds since Ray's dashboard last rewrote the discovery file; None: no file."""
        try:
            return (time.time() if now is None else now) - self.discovery.stat().st_mtime
        except OSError:
            return None

    @property
    def grafana_ini(self) -> Path:
        return self.metrics / "grafana" / "grafana.ini"

    @property
    def pid_file(self) -> Path:
        return self.metrics / "prometheus" / PID_FILE

    def dashboards_dir(self) -> Path:
        """Where Grafana, started with this session's grafana.ini, loads dashboards from:
        the path in Ray's provisioning file, else Ray's default."""
        provisioning = self.metrics / "grafana" / "provisioning" / "dashboards" / "default.yml"
        try:
            providers = yaml.safe_load(provisioning.read_text())["providers"]
            return Path(providers[0]["options"]["path"])
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return Path(os.environ.get("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR")
                        or self.metrics / "grafana" / "dashboards")

    def grafana_datasource(self) -> str | None:
        """The Prometheus URL Ray provisioned for Grafana ($RAY_PROMETHEUS_HOST)."""
        path = self.metrics / "grafana" / "provisioning" / "datasources" / "default.yml"
        try:
            return yaml.safe_load(path.read_text())["datasources"][0]["url"]
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return None


def find_session(session_dir: str | Path | None = None, temp_dir: str | Path | None = None,
                 *, now: float | None = None) -> RaySession:
    """The running Ray session: `session_dir`, else `<temp_dir or Ray's>/session_latest`.
    Raises MetricsStackError when none runs here, or when it has no metrics configs."""
    if session_dir is None:
        root = Path(temp_dir) if temp_dir else ray_temp_dir()
        link = root / "session_latest"
        if not link.exists():
            raise MetricsStackError(
                f"no Ray session on this machine: {link} does not exist. Start Ray first "
                "(`raydaa search ...` starts one for its sweep, `ray start --head` a lasting "
                "one); on a cluster run this on the head node (`ray attach cluster.yaml`); "
                "a Ray started with --temp-dir: pass the same --temp-dir here")
        session_dir = link
    session = RaySession(Path(session_dir).resolve())
    if not session.path.is_dir():
        raise MetricsStackError(f"no Ray session directory at {session.path}")
    age = session.discovery_age(now)
    if age is None or age > STALE_S:
        why = "has no " if age is None else f"last rewrote {age:.0f} s ago its "
        raise MetricsStackError(
            f"no Ray is running in {session.path}: it {why}{DISCOVERY_FILE} (a running Ray "
            "with its dashboard rewrites it every 5 s). Start Ray (with its dashboard: "
            "`ray start --head`, or `raydaa search ...`), then run this again")
    if not session.prometheus_config.is_file():
        raise MetricsStackError(
            f"{session.prometheus_config} is missing: Ray writes it when its dashboard runs "
            "(`ray start --head --include-dashboard=true`, `pip install 'ray[default]'`)")
    return session


def install_dashboard(session: RaySession) -> Path:
    """Copies raydaa's dashboard JSON beside Ray's own (written atomically: Grafana
    rescans the folder). Returns where it went."""
    folder = session.dashboards_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DASHBOARD_FILE
    tmp = target.with_suffix(".json.tmp")
    shutil.copyfile(dashboard_json(), tmp)
    os.replace(tmp, target)
    return target


def prometheus_config(session: RaySession, scrape_interval: str | None) -> Path:
    """Ray's prometheus.yml, or a copy of it beside it with `scrape_interval` (e.g. 1s)
    in place of Ray's 10s."""
    if scrape_interval is None:
        return session.prometheus_config
    config = yaml.safe_load(session.prometheus_config.read_text())
    config.setdefault("global", {})
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = scrape_interval
    path = session.prometheus_config.with_name("raydaa-prometheus.yml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass(frozen=True)
class PrometheusProcess:
    pid: int
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def running_prometheus(session: RaySession) -> PrometheusProcess | None:
    """The Prometheus `start_prometheus` left running for this session, if it still runs."""
    try:
        record = json.loads(session.pid_file.read_text())
    except (OSError, ValueError):
        return None
    import psutil

    try:
        process = psutil.Process(int(record["pid"]))
        alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        ours = alive and any("prometheus" in part for part in process.cmdline()[:1])
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None
    return PrometheusProcess(int(record["pid"]), int(record["port"]), Path(record["log"])) if ours else None


def ready(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def start_prometheus(session: RaySession, *, port: int = 9090, scrape_interval: str | None = None,
                     storage: str | Path | None = None, binary: str | None = None,
                     ready_timeout_s: float = 30.0) -> PrometheusProcess:
    """Starts `prometheus` on Ray's config, detached from this process (it keeps running
    after the command returns), listening on 127.0.0.1:`port`, its data under `storage`
    (default: the session's metrics/prometheus/data); waits until it is ready."""
    binary = binary or shutil.which("prometheus")
    if binary is None:
        raise MetricsStackError(f"no `prometheus` on PATH: {INSTALL_HINT}")
    config = prometheus_config(session, scrape_interval)
    data = Path(storage) if storage else session.prometheus_config.parent / "data"
    data.mkdir(parents=True, exist_ok=True)
    log = session.prometheus_config.parent / "raydaa-prometheus.log"
    command = [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
               f"--web.listen-address=127.0.0.1:{port}"]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    started = PrometheusProcess(process.pid, port, log)
    session.pid_file.write_text(json.dumps({"pid": process.pid, "port": port, "log": str(log),
                                            "config": str(config)}))
    deadline = time.monotonic() + ready_timeout_s
    while not ready(started.url):
        if process.poll() is not None or time.monotonic() > deadline:
            what = (f"exited with code {process.returncode}" if process.poll() is not None
                    else f"was not ready within {ready_timeout_s:.0f} s")
            _end(process.pid)
            session.pid_file.unlink(missing_ok=True)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            raise MetricsStackError(f"prometheus {what} ({' '.join(command)}); the end of "
                                    f"its log {log}:\n{tail}")
        time.sleep(0.2)
    return started


def stop_prometheus(session: RaySession) -> PrometheusProcess | None:
    """Ends the Prometheus `start_prometheus` started for this session (SIGTERM, then
    SIGKILL after 10 s); returns it, or None when none was running."""
    running = running_prometheus(session)
    if running is not None:
        _end(running.pid)
    session.pid_file.unlink(missing_ok=True)
    return running


def _end(pid: int, grace_s: float = 10.0) -> None:
    import psutil

    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        process.wait(grace_s)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(5)
    except psutil.Error:
        pass  # it is gone already


def session_alive(session: RaySession) -> bool:
    age = session.discovery_age()
    return age is not None and age <= STALE_S


def grafana_command(session: RaySession) -> str:
    """How to start Grafana on this session's provisioning (Ray's datasource and
    dashboards, raydaa's among them)."""
    home = next((p for p in ("/usr/share/grafana", "/opt/homebrew/share/grafana",
                             "/usr/local/share/grafana") if Path(p, "conf").is_dir()),
                "<your Grafana directory>")
    return f"grafana-server --config {session.grafana_ini} --homepath {home} web"
