"""Live sweep metrics through Ray's metrics API, and readable names for trials and runs.

Metrics (ray.util.metrics) are exported by each node's metrics agent in Prometheus format
on its `--metrics-export-port` (Ray prefixes every name with `ray_`), and appear in the
dashboard's Metrics view once Prometheus/Grafana are set up for it:

    raydaa_train_loss, raydaa_train_step,      live, from each run's controller (or the
                                               trial's driver, for a run trained there)
    raydaa_tokens_per_second                   after every reported step
    raydaa_trial_quality, raydaa_trial_kl      once per finished trial, from the sweep's
    raydaa_trials_done                         driver (counter, by status), which outlives
                                               the trials' own processes

All carry the tags scenario and method; per-trial ones also `trial` (the readable name).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import ray.train

TRIAL_TAGS = ("scenario", "method", "trial")


def trial_name(config: dict[str, Any], trial_id: str) -> str:
    """`dpo-b0.1-lr1e-06-<id>`; λ, SFT weight and epochs only when they vary from the
    two-stage defaults (single-stage ORPO/ASFT sweeps); `s<seed>` for a trial with its own
    training seed (a seed replicate: `dpo-b0.1-lr1e-06-s1-<id>`)."""
    parts = [str(config["method"]), f"b{config['beta']:g}", f"lr{config['lr']:g}"]
    if config.get("lambda_", 1.0) != 1.0:
        parts.append(f"l{config['lambda_']:g}")
    if config.get("sft_weight", 0.0):
        parts.append(f"sft{config['sft_weight']:g}")
    if (config.get("epochs") or 1) != 1:
        parts.append(f"ep{config['epochs']}")
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    return "-".join([*parts, trial_id])


@functools.cache
def _metrics() -> dict[str, Any]:
    # Created on first use in each process (the trial driver, a Train controller).
    from ray.util.metrics import Counter, Gauge

    return {
        "quality": Gauge(
            "raydaa_trial_quality", "Judge win rate of a finished trial", tag_keys=TRIAL_TAGS
        ),
        "kl": Gauge("raydaa_trial_kl", "KL(policy || reference) of a finished trial", TRIAL_TAGS),
        "loss": Gauge("raydaa_train_loss", "Training loss at the last reported step", TRIAL_TAGS),
        "step": Gauge("raydaa_train_step", "Last reported optimizer step", TRIAL_TAGS),
        "tokens_per_second": Gauge(
            "raydaa_tokens_per_second", "Training tokens per second over all workers", TRIAL_TAGS
        ),
        "done": Counter(
            "raydaa_trials_done",
            "Trials finished, failed, diverged or pruned",
            ("scenario", "method", "status"),
        ),
    }


def finite_number(value: Any) -> bool:
    """A metric value that is a real, finite number (not None, NaN, inf or text)."""
    return isinstance(value, int | float) and math.isfinite(value)


def record_trial(tags: dict[str, str], metrics: dict[str, Any]) -> None:
    """A trial's final quality and KL (when finite) and one count of its status."""
    gauges = _metrics()
    for key in ("quality", "kl"):
        if finite_number(metrics.get(key)):
            gauges[key].set(float(metrics[key]), tags=tags)
    done_tags = {"scenario": tags["scenario"], "method": tags["method"]}
    gauges["done"].inc(1.0, tags=done_tags | {"status": str(metrics.get("status", "failed"))})


class TrainMetricsCallback(ray.train.UserCallback):
    """Runs in the Train controller (or the trial's driver, for a run trained there):
    after each report, the rank-0 loss, step and throughput become gauges tagged with the
    trial."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = dict(tags)

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        first = metrics[0]
        gauges = _metrics()
        if finite_number(first.get("loss")):
            gauges["loss"].set(float(first["loss"]), tags=self.tags)
        if finite_number(first.get("step")):
            gauges["step"].set(float(first["step"]), tags=self.tags)
        if finite_number(first.get("tokens_per_s")):  # already summed over workers by the loop
            gauges["tokens_per_second"].set(float(first["tokens_per_s"]), tags=self.tags)
