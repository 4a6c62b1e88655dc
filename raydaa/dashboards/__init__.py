"""Grafana dashboards shipped with raydaa (JSON, Grafana's file-provisioning format) and the
Prometheus + Grafana wiring `raydaa dashboard` does around a running Ray session
(metrics_stack.py). The metrics the panels query: raydaa/sweep/telemetry.py."""
