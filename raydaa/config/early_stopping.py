"""How `raydaa search --scheduler asha|hyperband` stops a scenario's weak trials early, on
the quality of their intermediate evaluations (raydaa.config.evaluation.IntermediateEvalConfig).
Ray Tune's schedulers are built from it in raydaa.sweep.schedulers."""

from __future__ import annotations

from dataclasses import dataclass

from raydaa.config.rules import check_finite, check_whole


@dataclass
class EarlyStoppingConfig:
    grace_period: int = 1
    """Intermediate evaluations every trial gets before ASHA may stop it: its first rung
    is at step grace_period x intermediate_eval.eval_every (Ray counts it in steps).
    HyperBand has no grace period (its brackets come from the run's length)."""
    reduction_factor: float = 3.0
    """η of successive halving: at each rung a trial goes on only if its quality is in the
    top 1/η of the trials recorded there (ASHA), or the top 1/η of its bracket survive
    (HyperBand). 3 is HyperBand's usual value; 2 stops fewer trials."""

    def __post_init__(self) -> None:
        check_whole({"grace_period": self.grace_period})
        if self.grace_period < 1:
            raise ValueError(
                f"grace_period must be >= 1 (intermediate evaluations), got {self.grace_period}"
            )
        factor = check_finite({"reduction_factor": self.reduction_factor})["reduction_factor"]
        if not factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {self.reduction_factor!r}")
        self.reduction_factor = factor
