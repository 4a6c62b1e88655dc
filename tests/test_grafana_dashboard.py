"""raydaa's Grafana dashboard (raydaa/dashboards/raydaa_sweeps_grafana_dashboard.json): a
valid Grafana dashboard in the shape of Ray's own (Prometheus datasource variable, panels
with PromQL targets, a `sweep` variable), whose every expression names only metrics raydaa
exports (their names and tags read from raydaa.sweep.telemetry's definitions, as Ray's
metrics agent exports them: `ray_` prefix, `_total` after a counter) and filters only on
their tags; and `raydaa dashboard` on a fake Ray session directory (no Ray, no Prometheus:
what it finds, installs, refuses and prints). A real Prometheus scraping a real sweep:
tests/test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from raydaa.cli.dashboard import main as dashboard_main
from raydaa.dashboards.metrics_stack import DASHBOARD_FILE, DASHBOARD_UID, dashboard_json
from raydaa.sweep.telemetry import exported_metrics

# Labels Ray's metrics agent adds to every series, and Prometheus's own.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job"}
# PromQL words an expression may hold besides metric names (functions, aggregations).
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring",
                "group_left", "group_right", "rate", "increase", "irate", "delta",
                "last_over_time", "max_over_time", "clamp_min", "clamp_max", "and", "or",
                "unless", "offset", "topk", "bottomk", "label_values", "vector", "time"}
PANEL_TYPES = {"row", "timeseries", "graph", "stat", "bargauge", "gauge", "table"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(dashboard_json().read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def variable_queries(dashboard: dict) -> list[str]:
    return [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def metric_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, the labels its matchers name) for each metric in a PromQL expression."""
    found = []
    for name, matchers in re.findall(r"\b(ray_[A-Za-z0-9_]+)\s*(\{[^}]*\})?", expr):
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def test_the_dashboard_is_grafana_json_like_rays_own(dashboard):
    assert dashboard["uid"] == DASHBOARD_UID and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["panels"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # Ray's dashboards: a hidden datasource variable of type prometheus, used by every panel
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    sweep = variables["sweep"]
    assert sweep["type"] == "query" and sweep["datasource"] == "${datasource}"
    assert re.fullmatch(r"label_values\(ray_raydaa_\w+, sweep\)", sweep["query"]["query"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"] and panel["targets"], panel
        assert panel["datasource"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == "${datasource}"


def test_every_expression_names_only_exported_metrics_and_their_tags(dashboard):
    exported = exported_metrics()
    assert all(name.startswith("ray_raydaa_") for name in exported)
    used = set()
    for expr in [*expressions(dashboard), *variable_queries(dashboard)]:
        # every identifier outside label matchers, grouping clauses and strings is a
        # PromQL word or an exported metric
        bare = re.sub(r"(label_values\([^,]+),\s*\w+\)", r"\1)", expr)  # its label
        bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
        for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
            assert word in PROMQL_WORDS or word in exported, f"{word!r} in {expr!r}"
        selectors = metric_selectors(expr)
        assert selectors, f"no raydaa metric in {expr!r}"
        tags = set.intersection(*(set(exported[name].tags) for name, _ in selectors))
        grouped = {label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
                   for label in group.split(",") if label.strip()}
        label_values = set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", expr))
        for name, labels in selectors:
            assert labels <= set(exported[name].tags) | RAY_LABELS, (name, labels)
        assert grouped | label_values <= tags | RAY_LABELS, (expr, tags)
        used |= {name for name, _ in selectors}
    # and every metric raydaa exports has a panel
    assert used == set(exported), set(exported) - used


def test_panels_filter_by_the_sweep_variable(dashboard):
    """Every panel of trial metrics filters on $sweep; only the reference cache's (shared
    by the sweeps of a scenario, computed before any) does not."""
    for panel in panels(dashboard):
        for expr in (t["expr"] for t in panel["targets"]):
            if "refcache" in expr:
                continue
            for name, labels in metric_selectors(expr):
                assert "sweep" in labels and '"$sweep"' in expr, (panel["title"], name)


# -- `raydaa dashboard` on a fake session directory -------------------------------------


def fake_session(root: Path, *, age_s: float = 0.0, dashboards: Path | None = None) -> Path:
    """What Ray's dashboard writes into a session (raydaa.dashboards.metrics_stack):
    discovery file (`age_s` old), prometheus.yml, grafana.ini and provisioning."""
    session = root / "session_2026-01-01_00-00-00_000000_1"
    metrics = session / "metrics"
    (metrics / "prometheus").mkdir(parents=True)
    (metrics / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "10s"},
        "scrape_configs": [{"job_name": "ray", "file_sd_configs": [
            {"files": [str(session / "prom_metrics_service_discovery.json")]}]}]}))
    (metrics / "grafana" / "provisioning" / "dashboards").mkdir(parents=True)
    (metrics / "grafana" / "provisioning" / "datasources").mkdir(parents=True)
    (metrics / "grafana" / "grafana.ini").write_text("[paths]\nprovisioning = x\n")
    folder = dashboards or metrics / "grafana" / "dashboards"
    (metrics / "grafana" / "provisioning" / "dashboards" / "default.yml").write_text(
        yaml.safe_dump({"apiVersion": 1, "providers": [
            {"name": "Ray", "folder": "Ray", "type": "file", "options": {"path": str(folder)}}]}))
    (metrics / "grafana" / "provisioning" / "datasources" / "default.yml").write_text(
        yaml.safe_dump({"apiVersion": 1, "datasources": [
            {"name": "Prometheus", "type": "prometheus", "url": "http://localhost:9090"}]}))
    discovery = session / "prom_metrics_service_discovery.json"
    discovery.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": []}]))
    then = time.time() - age_s
    os.utime(discovery, (then, then))
    (root / "session_latest").symlink_to(session)
    return session


def test_no_ray_session_is_a_clear_error(tmp_path, capsys):
    assert dashboard_main(["--temp-dir", str(tmp_path), "--print-only"]) == 1
    err = capsys.readouterr().err
    assert "no Ray session on this machine" in err and "session_latest" in err


def test_an_ended_session_is_a_clear_error(tmp_path, capsys):
    fake_session(tmp_path, age_s=600)
    assert dashboard_main(["--temp-dir", str(tmp_path), "--print-only"]) == 1
    err = capsys.readouterr().err
    assert "no Ray is running in" in err and "600 s ago" in err


def test_it_installs_the_dashboard_where_rays_provisioning_points(tmp_path, capsys):
    elsewhere = tmp_path / "dashboards-elsewhere"  # RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR
    session = fake_session(tmp_path / "ray", dashboards=elsewhere)
    assert dashboard_main(["--temp-dir", str(tmp_path / "ray"), "--no-prometheus"]) == 0
    out = capsys.readouterr().out
    assert (elsewhere / DASHBOARD_FILE).read_bytes() == dashboard_json().read_bytes()
    assert f"grafana-server --config {session / 'metrics/grafana/grafana.ini'}" in out
    assert f"/d/{DASHBOARD_UID}" in out and "--remote-port 3000" in out


def test_print_only_changes_nothing(tmp_path, capsys):
    session = fake_session(tmp_path)
    assert dashboard_main(["--session-dir", str(session), "--print-only"]) == 0
    out = capsys.readouterr().out
    assert "would start prometheus" in out
    assert not (session / "metrics" / "grafana" / "dashboards").exists()
    assert not (session / "metrics" / "prometheus" / "raydaa-prometheus.pid").exists()


def test_a_missing_prometheus_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    fake_session(tmp_path / "ray")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert dashboard_main(["--temp-dir", str(tmp_path / "ray")]) == 1
    err = capsys.readouterr().err
    assert "no `prometheus` on PATH" in err and "apt-get install prometheus" in err
    assert "ray metrics launch-prometheus" in err
