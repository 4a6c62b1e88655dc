"""What an Optuna sweep optimizes (`raydaa search --objective`).

    quality            the judge's quality, maximized (the paper's "best config")
    quality-at-kl:K    quality maximized among trials whose KL(π ‖ π_ref) is at most K: an
                       Optuna constraint `kl - K <= 0`, so the sampler learns where the
                       budget holds and the study's best trial is a feasible one
    pareto             (quality max, KL min): a multi-objective study whose best trials are
                       the Pareto front (`--multi-objective` is the older spelling)

No Ray, no Optuna here: the parsing and the numbers the sweep hands to Optuna.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OBJECTIVES = ("quality", "quality-at-kl", "pareto")
FORMS = "quality, quality-at-kl:K (K a finite number > 0, e.g. quality-at-kl:0.5) or pareto"


@dataclass(frozen=True)
class Objective:
    kind: str = "quality"
    """One of OBJECTIVES."""
    kl_budget: float | None = None
    """K of quality-at-kl:K; None for the others."""

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective: unknown {self.kind!r}; expected {FORMS}")
        budget = self.kl_budget
        if (self.kind == "quality-at-kl") != (budget is not None):
            raise ValueError(f"objective: a KL budget goes with quality-at-kl only; expected {FORMS}")
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"objective: KL budget {budget!r} is not finite and > 0; expected {FORMS}")

    @property
    def metric(self) -> str | list[str]:
        """Tune's metric(s) for OptunaSearch."""
        return ["quality", "kl"] if self.kind == "pareto" else "quality"

    @property
    def mode(self) -> str | list[str]:
        return ["max", "min"] if self.kind == "pareto" else "max"

    @property
    def label(self) -> str:
        """As the flag spells it: quality, quality-at-kl:0.5, pareto."""
        return f"{self.kind}:{self.kl_budget:g}" if self.kl_budget is not None else self.kind

    @property
    def study_suffix(self) -> str:
        """Appended to the study's name: a study's directions and constraints are fixed at
        creation, so each objective keeps a study of its own ("" for quality, the default)."""
        if self.kind == "quality":
            return ""
        return f"-{self.kind}{self.kl_budget:g}" if self.kl_budget is not None else f"-{self.kind}"

    def kl_constraint(self, kl: float | None, worst: float = 0.0) -> float:
        """Optuna's constraint value for a trial's KL (feasible when <= 0): KL - K. An
        unmeasured KL (None, NaN) counts as infeasible: as the worst violation seen so far
        (`worst`), and at least K over the budget, so it never looks better than a measured
        breach and never poses as feasible (Optuna refuses a NaN constraint)."""
        if self.kl_budget is None:
            raise ValueError(f"objective {self.label}: no KL budget to constrain")
        if kl is None or not math.isfinite(kl):
            return max(self.kl_budget, worst)
        return float(kl) - self.kl_budget


def parse_objective(text: str) -> Objective:
    """`--objective` text to an Objective; ValueError naming the expected forms."""
    kind, sep, budget = text.strip().partition(":")
    if kind not in OBJECTIVES or (kind == "quality-at-kl") != bool(sep):
        raise ValueError(f"--objective {text!r}: expected {FORMS}")
    if not sep:
        return Objective(kind)
    try:
        value = float(budget)
    except ValueError:
        raise ValueError(f"--objective {text!r}: K {budget!r} is not a number; expected {FORMS}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--objective {text!r}: K must be finite and > 0; expected {FORMS}")
    return Objective(kind, value)
