"""A trial's intermediate evaluations, from its Ray Train run to its Tune trial.

`IntermediateResults` is Ray's `TuneReportCallback` (a Train V2 UserCallback run in the
Train controller, or in the trial's driver for a run trained there (raydaa/train/
in_process.py), which puts rank 0's report on the Tune session's queue: the Tune trial
gets it as a result, and its scheduler and searcher see it), made to forward only the
reports that carry an intermediate evaluation (raydaa.sweep.pruning.is_intermediate).
The training-step reports in between stay in Ray Train: Tune checks every result for the
scheduler's and searcher's metric and stops the sweep with an error on one without it
(`TuneController._validate_result_metrics`), Ray's OptunaSearch reads `result[metric]`
of every result, and HyperBand ranks a bracket by each trial's latest result. (ASHA alone
would skip them: it returns CONTINUE for a result without its time attribute or metric.)
No checkpoint path is forwarded: an intermediate evaluation saves nothing.
"""

from __future__ import annotations

from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from raydaa.sweep.pruning import is_intermediate


class IntermediateResults(TuneReportCallback):
    """Constructed in the trial's driver (a Tune session); `extra` is added to every
    forwarded result (what the trial's row needs that the run does not report: the
    reference path and cache)."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.extra = dict(extra or {})

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if metrics and is_intermediate(metrics[0]):
            first = {**metrics[0], **self.extra}
            super().after_report(run_context, [first, *metrics[1:]], None)
