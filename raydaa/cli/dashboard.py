"""`raydaa dashboard`: live sweep panels for the Ray running on this machine (a laptop's
local Ray, or a cluster's head node): raydaa's Grafana dashboard installed beside Ray's
own, Prometheus started on Ray's scrape config, and what to run for Grafana
(raydaa.dashboards.metrics_stack; docs/watching.md)."""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlsplit

from raydaa.dashboards.metrics_stack import (
    DASHBOARD_UID,
    MetricsStackError,
    dashboard_json,
    find_session,
    grafana_command,
    install_dashboard,
    running_prometheus,
    session_alive,
    start_prometheus,
    stop_prometheus,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa dashboard",
        description=(
            "Live panels of raydaa sweeps for the Ray session running here: install raydaa's "
            "Grafana dashboard into the session's Grafana provisioning, start Prometheus on "
            "Ray's generated scrape config (every node's metrics port), and print how to "
            "start Grafana. Prometheus keeps running after this returns (--stop ends it) "
            "unless --wait."
        ),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--temp-dir", default=None,
                       help="Ray's --temp-dir, if it was started with one (default: "
                       "$RAY_TMPDIR/ray or /tmp/ray); its session_latest is used")
    where.add_argument("--session-dir", default=None, help="a Ray session directory itself")
    parser.add_argument("--prometheus-port", type=int, default=9090,
                        help="Prometheus listens on 127.0.0.1:PORT (default: %(default)s, where "
                        "Ray's Grafana datasource expects it)")
    parser.add_argument("--scrape-interval", default=None, metavar="DURATION",
                        help="e.g. 2s (default: Ray's prometheus.yml, 10s)")
    parser.add_argument("--storage", default=None,
                        help="Prometheus's data directory (default: the session's "
                        "metrics/prometheus/data)")
    parser.add_argument("--no-prometheus", action="store_true",
                        help="only install the dashboard and print the commands")
    parser.add_argument("--print-only", action="store_true",
                        help="change nothing: print what would be installed and run")
    parser.add_argument("--wait", action="store_true",
                        help="stay in the foreground until Ctrl-C or the Ray session ends, "
                        "then stop Prometheus")
    parser.add_argument("--stop", action="store_true",
                        help="stop the Prometheus an earlier `raydaa dashboard` started")
    args = parser.parse_args(argv)
    try:
        session = find_session(args.session_dir, args.temp_dir)
    except MetricsStackError as err:
        if not args.stop:
            print(f"raydaa dashboard: {err}", file=sys.stderr)
            return 1
        from pathlib import Path

        from raydaa.dashboards.metrics_stack import RaySession, ray_temp_dir

        # the session may have ended: its Prometheus is still worth stopping
        path = args.session_dir or Path(args.temp_dir or ray_temp_dir()) / "session_latest"
        session = RaySession(Path(path).resolve())
    if args.stop:
        stopped = stop_prometheus(session)
        print(f"stopped Prometheus (pid {stopped.pid})" if stopped
              else f"no Prometheus started by raydaa runs for {session.path}")
        return 0

    url = f"http://127.0.0.1:{args.prometheus_port}"
    print(f"Ray session: {session.path}")
    if args.print_only:
        print(f"would copy {dashboard_json()}\n  to {session.dashboards_dir()}")
        if not args.no_prometheus:
            print(f"would start prometheus --config.file={session.prometheus_config} "
                  f"--web.listen-address=127.0.0.1:{args.prometheus_port}")
        _print_next_steps(session, url)
        return 0

    installed = install_dashboard(session)
    print(f"dashboard: {installed} (Grafana folder Ray, title `raydaa sweeps`)")
    prometheus = None
    if not args.no_prometheus:
        prometheus = running_prometheus(session)
        try:
            if prometheus is not None:
                print(f"Prometheus already runs for this session: {prometheus.url} "
                      f"(pid {prometheus.pid}); `raydaa dashboard --stop` ends it")
            else:
                prometheus = start_prometheus(session, port=args.prometheus_port,
                                              scrape_interval=args.scrape_interval,
                                              storage=args.storage)
                print(f"Prometheus: {prometheus.url} (pid {prometheus.pid}, log {prometheus.log})"
                      + ("" if args.wait else "; `raydaa dashboard --stop` ends it"))
        except MetricsStackError as err:
            print(f"raydaa dashboard: {err}", file=sys.stderr)
            return 1
        url = prometheus.url
    _print_next_steps(session, url)
    if not args.wait:
        return 0
    try:
        print("waiting: Ctrl-C (or the end of the Ray session) stops Prometheus", flush=True)
        while session_alive(session):
            time.sleep(2)
        print("the Ray session ended")
    except KeyboardInterrupt:
        pass
    finally:
        if stop_prometheus(session):
            print("stopped Prometheus", flush=True)
    return 0


def _print_next_steps(session, prometheus_url: str) -> None:
    datasource = session.grafana_datasource()
    lines = [
        "",
        f"Prometheus graph: {prometheus_url}/graph?g0.expr=ray_raydaa_train_step",
        "Grafana (not started by raydaa; https://grafana.com/grafana/download):",
        f"  {grafana_command(session)}",
        f"  then http://127.0.0.1:3000/d/{DASHBOARD_UID} (panels per sweep: the `sweep` "
        "variable); Ray's dashboard embeds Grafana when Ray starts with RAY_GRAFANA_HOST",
    ]
    if datasource and urlsplit(datasource).port != urlsplit(prometheus_url).port:
        lines.append(f"  note: Ray provisioned Grafana's datasource as {datasource}; start Ray "
                     f"with RAY_PROMETHEUS_HOST={prometheus_url} or use --prometheus-port 9090")
    lines += [
        "On a cluster (this command run on the head node), from your laptop:",
        "  ray dashboard cluster.yaml --port 3000 --remote-port 3000   # Grafana",
        "  ray dashboard cluster.yaml --port 9090 --remote-port 9090   # Prometheus",
    ]
    print("\n".join(lines), flush=True)
