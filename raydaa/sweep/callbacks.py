"""The Tune callback that writes each trial's row into the results store and says so."""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from raydaa.config.search_space import CONFIG_KEYS, AlignConfig
from raydaa.io.results_store import write_row
from raydaa.sweep.pruning import is_intermediate, pruned_fields
from raydaa.sweep.telemetry import record_trial, trial_name
from raydaa.sweep.trial import RESULT_KEYS, REUSED


class ResultsStoreCallback(tune.Callback):
    """Writes each trial's row when it completes, or when it errors (its reason kept), and
    prints one line about it on the sweep's console (`row_line`). A trial the sweep's
    `scheduler` (asha, hyperband) stopped is a `pruned` row with its last intermediate
    evaluation (raydaa.sweep.pruning)."""

    def __init__(self, results: str, scenario, scheduler: str | None = None) -> None:
        self.results, self.scenario, self.scheduler = results, scenario, scheduler

    def _row(
        self, trial, result: dict[str, Any], status: str | None = None, error: str = ""
    ) -> dict:
        row = _config_row(trial.config)
        row |= {k: result.get(k) for k in RESULT_KEYS}
        if row.get("diverged_step") == -1:
            row["diverged_step"] = None
        # the step whose policy quality and KL describe (none when nothing was evaluated)
        row["eval_step"] = result.get("step") if _finite(result.get("quality")) else None
        if status is None and is_intermediate(result):  # stopped mid-training
            row |= pruned_fields(result, self.scheduler, self.scenario.resources.num_workers)
            status, error = row["status"], row["error"]
        row["epochs"] = row["epochs"] or self.scenario.align.epochs
        return row | {
            "trial_id": trial.trial_id,
            "scenario": self.scenario.name,
            # the training seed: a replicate's own, else the scenario's
            "seed": _training_seed(trial.config, self.scenario.seed),
            "status": status or result.get("status", "failed"),
            "error": error or result.get("error", ""),
        }

    def _write(self, trial, row: dict) -> None:
        write_row(self.results, self.scenario.name, row)
        # Recorded here, in the sweep's driver, which outlives every trial's processes.
        tags = {"scenario": self.scenario.name, "method": str(row["method"])}
        record_trial(tags | {"trial": trial_name(trial.config, trial.trial_id)}, row)
        print(f"{trial_name(trial.config, trial.trial_id)}: {row_line(row)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get(REUSED):
            return  # its row is in the store already, as it was written
        self._write(trial, self._row(trial, trial.last_result or {}))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(
            trial, self._row(trial, trial.last_result or {}, "failed", _error_reason(trial))
        )


def row_line(row: dict[str, Any]) -> str:
    """`finished, quality 0.61, KL 0.84, peak memory: training 1.40 GiB resident per worker,
    evaluation 0.85 GiB resident`: a trial's row as the sweep's console shows it (the
    trial's own prints stay in its Ray log)."""
    def given(key: str) -> bool:
        return isinstance(row.get(key), int | float) and math.isfinite(row[key])

    parts = [str(row.get("status"))]
    if row.get("status") != "finished":
        return f"{parts[0]}: {row.get('error') or 'no reason recorded'}"
    parts += [f"{name} {row[key]:.4g}" for key, name in (("quality", "quality"), ("kl", "KL"))
              if given(key)]
    memory = [f"{what} {row[key] / 1024:.2f} GiB {kind}"
              for key, what, kind in (("peak_rss_mib", "training", "resident per worker"),
                                      ("peak_gpu_mib", "training", "GPU per worker"),
                                      ("eval_peak_rss_mib", "evaluation", "resident"),
                                      ("eval_peak_gpu_mib", "evaluation", "GPU"))
              if given(key)]
    if memory:
        parts.append("peak memory: " + ", ".join(memory))
    return ", ".join(parts)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _config_row(config: dict[str, Any]) -> dict[str, Any]:
    """The row's config columns: exactly what the loss ran with (defaults resolved); a
    config the loss refused is kept as given (its trial failed with the reason)."""
    try:
        return AlignConfig.from_config(config).as_dict()
    except (KeyError, TypeError, ValueError):
        return {k: config.get(k) for k in CONFIG_KEYS}


def _training_seed(config: dict[str, Any], scenario_seed: int) -> int:
    seed = config.get("seed")
    return scenario_seed if seed is None else int(seed)


def _error_reason(trial) -> str:
    """The exception's last line from Tune's error file (the row should say why, not where),
    with the file's path for the full traceback."""
    path = getattr(trial, "error_file", None)
    if not path:
        return "trial driver crashed"
    try:
        lines = [ln for ln in open(path, encoding="utf-8").read().splitlines() if ln.strip()]
    except OSError:
        return f"trial driver crashed (traceback: {path})"
    return f"{lines[-1].strip() if lines else 'trial driver crashed'} (traceback: {path})"


