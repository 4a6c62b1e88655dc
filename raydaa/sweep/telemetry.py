"""Live sweep metrics through Ray's metrics API, and readable names for trials and runs.

Metrics (ray.util.metrics) are exported by each node's metrics agent in Prometheus format
on its `--metrics-export-port` (Ray prefixes every name with `ray_`, and a counter's with
`_total` after it); `raydaa dashboard` points a Prometheus at them and installs the
Grafana dashboard `raydaa/dashboards/raydaa_sweeps_grafana_dashboard.json`. `METRICS`
lists each one (name, kind, tags, who sets it when); the reference cache's progress
gauges live with the cache (raydaa.train.refcache.PROGRESS_METRICS) and
`exported_metrics()` lists both, as Prometheus names them.

Per-trial metrics carry the tags sweep (the Tune experiment's name, e.g.
`dpo-two_stage-grid`), scenario, method and trial (the readable name). A process creates
its metrics on first use (a trial's driver, a Train controller, the sweep's driver).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import ray.train
from ray import tune

from raydaa.sweep.pruning import ENDED, PRUNED, is_intermediate

TRIAL_TAGS = ("sweep", "scenario", "method", "trial")
SWEEP_TAGS = ("sweep", "scenario", "method", "state")
DONE_TAGS = ("sweep", "scenario", "method", "status")
STATES = ("pending", "running", "paused", "finished", "failed", "diverged", "pruned")
"""A sweep's trials by state: Tune's three live ones, and how an ended one ended (its
store row's status)."""


@dataclass(frozen=True)
class MetricSpec:
    key: str  # how the code below names it
    name: str  # the ray.util.metrics name (Prometheus: ray_<name>, a counter's + _total)
    kind: str  # gauge | counter
    description: str
    tags: tuple[str, ...]
    when: str  # who sets it, when (for docs/watching.md)


METRICS = (
    MetricSpec("loss", "raydaa_train_loss", "gauge", "Training loss at the last reported step",
               TRIAL_TAGS, "each logged step, by the run's controller (or the trial's driver "
               "for a run trained there)"),
    MetricSpec("step", "raydaa_train_step", "gauge", "Last reported optimizer step",
               TRIAL_TAGS, "0 when the trial starts, then each logged step, as above"),
    MetricSpec("total_steps", "raydaa_train_total_steps", "gauge",
               "Optimizer steps of the trial's whole run (step / total_steps = progress)",
               TRIAL_TAGS, "by the trial's driver when the trial starts, then with each "
               "logged step"),
    MetricSpec("tokens_per_second", "raydaa_tokens_per_second", "gauge",
               "Training tokens per second over all workers", TRIAL_TAGS,
               "each logged step, as raydaa_train_loss"),
    MetricSpec("eval_quality", "raydaa_eval_quality", "gauge",
               "Judge win rate of the trial's last intermediate evaluation (subset)",
               TRIAL_TAGS, "every intermediate_eval.eval_every steps, as raydaa_train_loss"),
    MetricSpec("eval_kl", "raydaa_eval_kl", "gauge",
               "KL(policy || reference) of the trial's last intermediate evaluation",
               TRIAL_TAGS, "as raydaa_eval_quality"),
    MetricSpec("quality", "raydaa_trial_quality", "gauge", "Judge win rate of a finished trial",
               TRIAL_TAGS, "as each trial ends (with a finite quality) and every second "
               "after, by the sweep's driver (a pruned trial's: its last intermediate "
               "evaluation)"),
    MetricSpec("kl", "raydaa_trial_kl", "gauge", "KL(policy || reference) of a finished trial",
               TRIAL_TAGS, "as raydaa_trial_quality"),
    MetricSpec("done", "raydaa_trials_done", "counter",
               "Trials finished, failed, diverged or pruned", DONE_TAGS,
               "+1 per ended trial, by the sweep's driver"),
    MetricSpec("sweep_trials", "raydaa_sweep_trials", "gauge",
               "The sweep's trials in each state (pending, running, paused, finished, failed, "
               "diverged, pruned)", SWEEP_TAGS,
               "by the sweep's driver on every trial event and at most once a second"),
)


def exported_metrics() -> dict[str, MetricSpec]:
    """Every raydaa metric as Prometheus names it on a node's metrics endpoint
    (`ray_raydaa_train_loss`, `ray_raydaa_trials_done_total`), with its spec."""
    from raydaa.train.refcache import PROGRESS_METRICS

    specs = [*METRICS, *(MetricSpec(*fields) for fields in PROGRESS_METRICS)]
    return {f"ray_{s.name}" + ("_total" if s.kind == "counter" else ""): s for s in specs}


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

    kinds = {"gauge": Gauge, "counter": Counter}
    return {s.key: kinds[s.kind](s.name, s.description, tag_keys=s.tags) for s in METRICS}


def _tagged(tags: dict[str, str], keys: tuple[str, ...] = TRIAL_TAGS) -> dict[str, str]:
    """Exactly `keys`, each a string ("" for one not given: Ray refuses a missing tag)."""
    return {key: str(tags.get(key, "")) for key in keys}


def sweep_name(context) -> str:
    """The Tune experiment a trial runs in (its metrics' sweep tag), from its Tune
    context; "" where the context has none."""
    get = getattr(context, "get_experiment_name", None)
    return str(get() or "") if get is not None else ""


def finite_number(value: Any) -> bool:
    """A metric value that is a real, finite number (not None, NaN, inf or text)."""
    return isinstance(value, int | float) and math.isfinite(value)


_SWEEP_OF: dict[str, str] = {}
"""Trial name -> its sweep, filled in the sweep's driver by SweepMetricsCallback."""


def record_trial(tags: dict[str, str], metrics: dict[str, Any]) -> None:
    """A trial's final quality and KL (when finite) and one count of its status. In the
    sweep's driver; the sweep tag, when `tags` lack it, is the one SweepMetricsCallback saw
    the trial in."""
    tags = {"sweep": _SWEEP_OF.get(tags.get("trial", ""), ""), **tags}
    _set_quality_kl(metrics, _tagged(tags))
    status = str(metrics.get("status", "failed"))
    _metrics()["done"].inc(1.0, tags=_tagged(tags | {"status": status}, DONE_TAGS))


def _set_quality_kl(metrics: dict[str, Any], tags: dict[str, str], prefix: str = "") -> None:
    """The quality and KL gauges (`eval_` ones for an intermediate evaluation) from
    `metrics`, each when finite."""
    gauges = _metrics()
    for key in ("quality", "kl"):
        if finite_number(metrics.get(key)):
            gauges[prefix + key].set(float(metrics[key]), tags=tags)


def record_trial_start(tags: dict[str, str], total_steps: int) -> None:
    """In the trial's driver as the trial starts: its run's total steps, and step 0 (so
    the progress panel shows it before its first report)."""
    gauges, tags = _metrics(), _tagged(tags)
    gauges["total_steps"].set(float(total_steps), tags=tags)
    gauges["step"].set(0.0, tags=tags)


class TrainMetricsCallback(ray.train.UserCallback):
    """Runs in the Train controller (or the trial's driver, for a run trained there):
    after each report, the rank-0 loss, step and throughput become gauges tagged with the
    trial, and so do an intermediate evaluation's quality and KL. `total_steps` is set
    again with each step: Ray stops exporting a gauge a process has not set for ~20 s
    (measured on Ray 2.60), and step / total_steps needs both at the same scrape."""

    def __init__(self, tags: dict[str, str], total_steps: int | None = None) -> None:
        self.tags = _tagged(tags)
        self.total_steps = total_steps

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        first = metrics[0]
        gauges = _metrics()
        if self.total_steps is not None:
            gauges["total_steps"].set(float(self.total_steps), tags=self.tags)
        for key, gauge in (("loss", "loss"), ("step", "step"),
                           # already summed over workers by the loop
                           ("tokens_per_s", "tokens_per_second")):
            if finite_number(first.get(key)):
                gauges[gauge].set(float(first[key]), tags=self.tags)
        if is_intermediate(first):
            _set_quality_kl(first, self.tags, prefix="eval_")


def trial_state(trial, ended: dict[str, str]) -> str:
    """One of STATES for a Tune trial: how it ended (`ended`, filled as trials complete,
    else from its last result: an intermediate one means pruned), or Tune's live status."""
    if trial.trial_id in ended:
        return ended[trial.trial_id]
    if trial.status == "ERROR":
        return "failed"
    if trial.status == "TERMINATED":
        return ended_status(trial.last_result)
    return trial.status.lower() if trial.status.lower() in STATES else "pending"


def ended_status(result: dict[str, Any] | None) -> str:
    """How a completed trial ended, from its last result (as its store row says)."""
    if is_intermediate(result):
        return PRUNED
    status = str((result or {}).get("status", "failed"))
    return status if status in ENDED else "failed"


class SweepMetricsCallback(tune.Callback):
    """In the sweep's driver: the sweep's trials by method and state
    (`raydaa_sweep_trials`), set on every trial event and at most once a second besides,
    with the final quality and KL of each ended trial set again each time (Ray stops
    exporting a gauge not set for ~20 s); and which sweep each trial belongs to (for
    record_trial's sweep tag)."""

    def __init__(self, sweep: str, scenario: str, every_s: float = 1.0) -> None:
        self.sweep, self.scenario, self.every_s = sweep, scenario, every_s
        self.ended: dict[str, str] = {}
        self._last = 0.0
        self._methods: set[str] = set()

    def _observe(self, trials) -> None:
        self._last = time.monotonic()
        counts: dict[tuple[str, str], int] = {}
        for trial in trials:
            method = str(trial.config.get("method", ""))
            name = trial_name(trial.config, trial.trial_id)
            _SWEEP_OF[name] = self.sweep
            self._methods.add(method)
            key = (method, trial_state(trial, self.ended))
            counts[key] = counts.get(key, 0) + 1
            if key[1] not in ("pending", "running", "paused"):
                self._final_gauges(trial, method, name)
        gauge = _metrics()["sweep_trials"]
        for method in self._methods:
            for state in STATES:  # zeros too: a panel shows a state emptying
                tags = {"sweep": self.sweep, "scenario": self.scenario, "method": method,
                        "state": state}
                gauge.set(float(counts.get((method, state), 0)), tags=tags)

    def _final_gauges(self, trial, method: str, name: str) -> None:
        """An ended trial's quality and KL, from the last result Tune has of it (the
        values its store row keeps: record_trial set them first)."""
        tags = {"sweep": self.sweep, "scenario": self.scenario, "method": method, "trial": name}
        _set_quality_kl(trial.last_result or {}, tags)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last >= self.every_s:
            self._observe(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.ended.pop(trial.trial_id, None)  # a resumed or retried trial runs again
        self._observe(trials)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.ended.pop(trial.trial_id, None)
        self._observe(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = ended_status(trial.last_result)
        self._observe(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = "failed"
        self._observe(trials)

    def on_experiment_end(self, trials, **info):
        self._observe(trials)
