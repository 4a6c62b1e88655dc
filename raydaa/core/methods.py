"""The paper's eight methods as data, and one loss configuration: torch-free.

What a training loop, a search space, a report or the CLI must know about a method (its
reward, pairwise or pointwise, its own length normalization, its extra hyperparameters),
without its formula: the formulas are in raydaa.core.losses. `LossConfig` is the one
declaration of a loss's hyperparameters; everything that lists them derives from it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

# ---------------------------------------------------------------------------------------
# Registry: what each method needs, so training code reads a spec and never names a method
# ---------------------------------------------------------------------------------------

RewardKind = Literal["ref", "odds", "none"]
PreferenceKind = Literal["pairwise", "pointwise"]


@dataclass(frozen=True)
class MethodSpec:
    """What a training loop must know about a method, and nothing of its formula."""

    name: str
    reward_kind: RewardKind
    """ref: log π - log π_ref; odds: log(p/(1-p)); none: log π (paper §2.3, §3)."""
    preference_kind: PreferenceKind
    """pairwise compares y_w with y_l; pointwise pushes each up or down alone (§3)."""
    original_length_normalized: bool
    """Whether the method's own paper divides log π by |y| (paper Table 3)."""
    citation: str
    extra_hparams: dict[str, float] = field(default_factory=dict)
    """Keyword hyperparameters beyond beta that align_loss takes, with their defaults
    (SimPO's γ/β: 0.5, paper A.2.2)."""

    @property
    def needs_reference(self) -> bool:
        """Only r^ref methods read π_ref; SimPO and the odds methods are reference-free."""
        return self.reward_kind == "ref"


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("dpo", "ref", "pairwise", False, "Rafailov et al. 2023"),
        MethodSpec("ipo", "ref", "pairwise", False, "Azar et al. 2023"),
        MethodSpec(
            "simpo",
            "none",
            "pairwise",
            True,
            "Meng et al. 2024",
            extra_hparams={"gamma_beta_ratio": 0.5},
        ),
        MethodSpec("nca", "ref", "pointwise", False, "Chen et al. 2024"),
        MethodSpec("cal_dpo", "ref", "pointwise", False, "Xiao et al. 2024"),
        MethodSpec(
            "apo_zero", "ref", "pointwise", False, "D'Oosterlinck et al. 2024"
        ),
        MethodSpec("orpo", "odds", "pairwise", True, "Hong et al. 2024"),
        MethodSpec("asft", "odds", "pointwise", True, "Wang et al. 2024"),
    )
}
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)

NormalizationPolicy = Literal["paper", "original", "sum", "mean"]
NORMALIZATIONS: tuple[str, ...] = ("paper", "original", "sum", "mean")


def get_spec(method: str) -> MethodSpec:
    """The spec of `method`, or a ValueError that lists the valid names."""
    try:
        return METHOD_SPECS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join(METHODS)}"
        ) from None


def uses_length_normalization(method: str, policy: NormalizationPolicy = "paper") -> bool:
    """Whether log π is divided by |y| for `method` under `policy`.

    paper: always (the paper normalizes every method, its Appendix A.1);
    original: each method's own choice (paper Table 3); sum / mean: forced off / on.
    """
    spec = get_spec(method)
    choices = {
        "paper": True,
        "mean": True,
        "sum": False,
        "original": spec.original_length_normalized,
    }
    if policy not in choices:
        raise ValueError(f"unknown normalization {policy!r}; expected one of {', '.join(choices)}")
    return choices[policy]


# ---------------------------------------------------------------------------------------
# One loss configuration: what travels from the search space to preference_loss whole
# ---------------------------------------------------------------------------------------


LOSS_DOMAINS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "beta": ("> 0", lambda v: v > 0),
    "lambda_": ("> 0", lambda v: v > 0),
    "sft_weight": (">= 0", lambda v: v >= 0),
    "gamma_beta_ratio": (">= 0", lambda v: v >= 0),
}
"""Each numeric loss field's domain beyond finiteness: (its wording, its test)."""


def check_loss_number(name: str, value: Any) -> float:
    """`value` as the float the loss field `name` runs with: a finite number (not a bool,
    NaN or inf) in its LOSS_DOMAINS range; else a ValueError naming the field and value."""
    wording, within = LOSS_DOMAINS[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not within(value)
    ):
        raise ValueError(f"{name} must be a finite number {wording}, got {value!r}")
    return float(value)


def _field(help_: str, **metadata: Any) -> dict[str, Any]:
    return {"help": help_, **metadata}


@dataclass(frozen=True)
class LossConfig:
    """The six fields a DAA loss runs with. Search spaces, Tune configs, results-store
    columns and `raydaa align` flags are derived from these fields, so a new loss
    hyperparameter is declared here (and given a value in the search space) only.

    Values are resolved on construction: a method-specific field (SimPO's γ/β) takes its
    default when None and is None for methods that do not read it, so what is recorded is
    exactly what the loss ran with.
    """

    method: str = field(metadata=_field("one of METHODS", choices=METHODS))
    beta: float = field(metadata=_field("the method's β (> 0); ORPO/ASFT: 1 is the original"))
    lambda_: float = field(default=1.0, metadata=_field("alignment-term weight λ"))
    sft_weight: float = field(
        default=0.0, metadata=_field("weight of the SFT term -log π(y_w|x): 1 for single-stage ORPO/ASFT")
    )
    gamma_beta_ratio: float | None = field(
        default=None, metadata=_field("SimPO's γ/β (default 0.5, paper A.2.2); SimPO only")
    )
    normalization: NormalizationPolicy = field(
        default="paper",
        metadata=_field(
            "length normalization of log-probs: paper (every method, App. A.1), "
            "original (each method's own, Table 3), sum, mean",
            choices=NORMALIZATIONS,
        ),
    )

    def __post_init__(self) -> None:
        spec = get_spec(self.method)
        for name in ("beta", "lambda_", "sft_weight"):
            try:
                object.__setattr__(self, name, check_loss_number(name, getattr(self, name)))
            except ValueError as err:
                raise ValueError(f"{self.method}: {err}") from None
        for name in _METHOD_SPECIFIC:
            value = getattr(self, name)
            if name not in spec.extra_hparams:
                if value is not None:
                    raise ValueError(f"{name}: only {_takers(name)} takes it; got {value!r} for {self.method}")
                continue
            value = spec.extra_hparams[name] if value is None else value
            try:
                object.__setattr__(self, name, check_loss_number(name, value))
            except ValueError as err:
                raise ValueError(f"{self.method}: {err}") from None
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: unknown {self.normalization!r}; expected one of {', '.join(NORMALIZATIONS)}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> LossConfig:
        """The loss fields of a flat mapping (a trial's config, a results-store row);
        other keys are ignored, missing or None ones take their defaults."""
        return cls(**{k: values[k] for k in LOSS_FIELDS if values.get(k) is not None})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LOSS_FIELDS}

    @property
    def spec(self) -> MethodSpec:
        return get_spec(self.method)

    @property
    def normalize(self) -> bool:
        """Whether the caller divides log π by |y| before calling preference_loss."""
        return uses_length_normalization(self.method, self.normalization)


LOSS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LossConfig))
"""The loss configuration's keys, in declaration order."""


def _scalar_type(hint: Any) -> type:
    """float for `float` and `float | None`, str for a Literal of strings."""
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0])
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


LOSS_FIELD_TYPES: dict[str, type] = {
    name: _scalar_type(hint) for name, hint in typing.get_type_hints(LossConfig).items()
}
"""Each loss field's value type (what a store column and a CLI flag hold)."""
_METHOD_SPECIFIC = tuple(sorted({n for spec in METHOD_SPECS.values() for n in spec.extra_hparams}))


def _takers(name: str) -> str:
    return ", ".join(m for m, spec in METHOD_SPECS.items() if name in spec.extra_hparams)


