"""The paper's eight Direct Alignment Algorithm losses as pure functions (no Ray, no model).

Paper: "The Differences Between Direct Alignment Algorithms are a Blur", §2.3-3.1.
Every method is one function of two per-example "rewards" (shape (B,)) and keyword-only
hyperparameters; `METHOD_SPECS` says which reward each method reads:

    ref   r = log π(y|x) - log π_ref(y|x)              (DPO's implicit reward, §2.3)
    odds  o = log(p / (1 - p)),  p = π(y|x)            (ORPO's odds, §2.3)
    none  s = log π(y|x)                               (SimPO: uniform reference, footnote 1)

`preference_loss` turns per-sequence log-probs into those rewards and returns per-example
losses plus detached rewards; the caller reduces. Total loss per example is

    sft_weight * (-log π(y_w|x)) + lambda_ * L_align(beta)          (§2.4, §3.1.2)

so single-stage ORPO/ASFT (sft_weight=1, beta=1, lambda_ in {0.1, .., 1}) and the paper's
two-stage β-ORPO/β-ASFT (sft_weight=0, lambda_=1, beta searched) share one formula.
Log-probs are whatever the caller reduced: summed, or divided by |y| (paper §2.1/A.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

_LN2 = math.log(2.0)
# log π = 0 exactly means p = 1: infinite odds. Keep p a hair below 1 so odds, losses and
# gradients stay finite (the gradient of log(1-p) is ~1/|log π|: 1e20 still fits float32).
_MAX_LOGP_FOR_ODDS = -1e-20


class PreferenceLoss(NamedTuple):
    """Per-example outputs of a DAA loss; the caller reduces (mean over the batch)."""

    losses: torch.Tensor  # (B,) sft_weight * NLL(y_w) + lambda_ * L_align
    chosen_rewards: torch.Tensor  # (B,) beta * reward(y_w), detached
    rejected_rewards: torch.Tensor  # (B,) beta * reward(y_l), detached


# ---------------------------------------------------------------------------------------
# Numerically stable pieces
# ---------------------------------------------------------------------------------------


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Mächler 2012, "Accurately computing
    log(1 - exp(-|a|))"): log(-expm1(x)) near 0, log1p(-exp(x)) far from it.

    Both branches are evaluated on inputs clamped into their own safe half, so the branch
    torch.where does not pick never produces inf/nan that would leak into the gradient.
    """
    near_zero = x > -_LN2
    near = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, -_LN2))))
    far = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, -_LN2), x)))
    return torch.where(near_zero, near, far)


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """r^odds = log(p / (1 - p)) from log p, never forming 1 - exp(log p) (paper §2.3)."""
    logp = logp.clamp(max=_MAX_LOGP_FOR_ODDS)
    return logp - log1mexp(logp)


# ---------------------------------------------------------------------------------------
# One function per method: L_align from the method's reward (shapes (B,) -> (B,))
# ---------------------------------------------------------------------------------------


def dpo_loss(r_w: torch.Tensor, r_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), paper §2.3: -log σ(β r_w - β r_l), r = log π/π_ref."""
    return -F.logsigmoid(beta * (r_w - r_l))  # §2.3, L_DPO


def ipo_loss(r_w: torch.Tensor, r_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023), paper §2.3: (r_w - r_l - 1/(2β))²."""
    return (r_w - r_l - 1.0 / (2.0 * beta)) ** 2  # §2.3, L_IPO


def simpo_loss(
    s_w: torch.Tensor, s_l: torch.Tensor, *, beta: float, gamma_beta_ratio: float
) -> torch.Tensor:
    """SimPO (Meng et al. 2024), paper §2.3: -log σ(β s_w - β s_l - γ), s = log π,
    with γ = gamma_beta_ratio · β (the ratio γ/β is what the paper fixes, §A.2.2)."""
    return -F.logsigmoid(beta * (s_w - s_l - gamma_beta_ratio))  # §2.3, L_SimPO


def nca_loss(r_w: torch.Tensor, r_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """NCA (Chen et al. 2024), paper §2.3:
    -log σ(β r_w) - ½ log σ(-β r_w) - ½ log σ(-β r_l)."""
    return (
        -F.logsigmoid(beta * r_w)
        - 0.5 * F.logsigmoid(-beta * r_w)
        - 0.5 * F.logsigmoid(-beta * r_l)
    )  # §2.3, L_NCA


def cal_dpo_loss(r_w: torch.Tensor, r_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Cal-DPO (Xiao et al. 2024), paper §2.3:
    -log σ(r_w - r_l) + (r_w - 1/(2β))² + (r_l + 1/(2β))²  (β only in the calibration)."""
    half_inv_beta = 1.0 / (2.0 * beta)
    return (
        -F.logsigmoid(r_w - r_l) + (r_w - half_inv_beta) ** 2 + (r_l + half_inv_beta) ** 2
    )  # §2.3, L_Cal-DPO


def apo_zero_loss(r_w: torch.Tensor, r_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """APO-Zero (D'Oosterlinck et al. 2024), paper §2.3: -σ(β r_w) + σ(β r_l), plus the
    constant 1 so the loss lies in [0, 2] (same gradient, readable logs)."""
    return 1.0 - torch.sigmoid(beta * r_w) + torch.sigmoid(beta * r_l)  # §2.3, L_APO-Zero


def orpo_loss(o_w: torch.Tensor, o_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """β-ORPO alignment term, paper §3.1.2: -log σ(β o_w - β o_l), o = log(p/(1-p)).
    β = 1 is the original ORPO term (Hong et al. 2024, §2.4)."""
    return -F.logsigmoid(beta * (o_w - o_l))  # §3.1.2, L^β_ORPO-Align


def asft_loss(o_w: torch.Tensor, o_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """β-ASFT alignment term, paper §3.1.2: -log σ(β o_w) - log σ(-β o_l).

    The paper's §2.4 prints the β = 1 term as log σ(o_w) - log σ(-o_l) inside -λ(...),
    a sign slip: its own Theorem 3.1 / Appendix B prove the BCE form used here.
    """
    return -F.logsigmoid(beta * o_w) - F.logsigmoid(-beta * o_l)  # §3.1.2, L^β_ASFT-Align


# ---------------------------------------------------------------------------------------
# Registry: what each method needs, so training code reads a spec and never names a method
# ---------------------------------------------------------------------------------------

RewardKind = Literal["ref", "odds", "none"]
PreferenceKind = Literal["pairwise", "pointwise"]


@dataclass(frozen=True)
class MethodSpec:
    """What a training loop must know about a method, and nothing of its formula."""

    name: str
    align_loss: Callable[..., torch.Tensor]
    """L_align(reward_w, reward_l, *, beta[, gamma_beta_ratio]) -> (B,)."""
    reward_kind: RewardKind
    """ref: log π - log π_ref; odds: log(p/(1-p)); none: log π (paper §2.3, §3)."""
    preference_kind: PreferenceKind
    """pairwise compares y_w with y_l; pointwise pushes each up or down alone (§3)."""
    original_length_normalized: bool
    """Whether the method's own paper divides log π by |y| (paper Table 3)."""
    citation: str
    extra_hparams: tuple[str, ...] = ()
    """Keyword hyperparameters beyond beta that align_loss takes (SimPO's γ/β)."""

    @property
    def needs_reference(self) -> bool:
        """Only r^ref methods read π_ref; SimPO and the odds methods are reference-free."""
        return self.reward_kind == "ref"


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("dpo", dpo_loss, "ref", "pairwise", False, "Rafailov et al. 2023"),
        MethodSpec("ipo", ipo_loss, "ref", "pairwise", False, "Azar et al. 2023"),
        MethodSpec(
            "simpo",
            simpo_loss,
            "none",
            "pairwise",
            True,
            "Meng et al. 2024",
            extra_hparams=("gamma_beta_ratio",),
        ),
        MethodSpec("nca", nca_loss, "ref", "pointwise", False, "Chen et al. 2024"),
        MethodSpec("cal_dpo", cal_dpo_loss, "ref", "pointwise", False, "Xiao et al. 2024"),
        MethodSpec(
            "apo_zero", apo_zero_loss, "ref", "pointwise", False, "D'Oosterlinck et al. 2024"
        ),
        MethodSpec("orpo", orpo_loss, "odds", "pairwise", True, "Hong et al. 2024"),
        MethodSpec("asft", asft_loss, "odds", "pointwise", True, "Wang et al. 2024"),
    )
}
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)

NormalizationPolicy = Literal["paper", "original", "sum", "mean"]


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
# The contract: per-sequence log-probs in, per-example losses and detached rewards out
# ---------------------------------------------------------------------------------------


def _check_inputs(name: str, *tensors: torch.Tensor | None) -> None:
    shapes = {tuple(t.shape) for t in tensors if t is not None}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            f"{name}: log-probs must all have the same shape (B,), got {sorted(shapes)}"
        )


def preference_loss(
    method: str,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float,
    lambda_: float = 1.0,
    sft_weight: float = 0.0,
    gamma_beta_ratio: float = 0.5,
) -> PreferenceLoss:
    """Per-example loss of `method` on a batch of preference pairs.

    Args:
        method: one of METHODS.
        policy_chosen_logps, policy_rejected_logps: (B,) log π_θ(y|x), already reduced
            (summed, or divided by the completion length when the run normalizes).
        ref_chosen_logps, ref_rejected_logps: (B,) log π_ref(y|x), same reduction;
            required when the method's spec needs the reference, ignored otherwise.
        beta: the method's β (> 0). ORPO/ASFT: β = 1 is the original method.
        lambda_: weight of the alignment term (single-stage ORPO/ASFT's λ).
        sft_weight: weight of the SFT term -log π(y_w|x) (1 for single-stage ORPO/ASFT).
        gamma_beta_ratio: SimPO's γ/β.

    Returns PreferenceLoss(losses (B,), chosen_rewards (B,), rejected_rewards (B,)), with
    rewards = β · (the method's reward), detached.
    """
    spec = get_spec(method)
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"{method}: beta must be a finite number > 0, got {beta!r}")
    if spec.needs_reference and (ref_chosen_logps is None or ref_rejected_logps is None):
        raise ValueError(
            f"{method} needs reference log-probs (ref_chosen_logps, ref_rejected_logps)"
        )
    refs = (ref_chosen_logps, ref_rejected_logps) if spec.needs_reference else ()
    _check_inputs(method, policy_chosen_logps, policy_rejected_logps, *refs)

    # float32 at least: bf16 log-probs lose the small margins the losses live on
    dtype = torch.promote_types(policy_chosen_logps.dtype, torch.float32)
    pi_w, pi_l = policy_chosen_logps.to(dtype), policy_rejected_logps.to(dtype)
    if spec.reward_kind == "ref":
        reward_w, reward_l = pi_w - ref_chosen_logps.to(dtype), pi_l - ref_rejected_logps.to(dtype)
    elif spec.reward_kind == "odds":
        reward_w, reward_l = log_odds(pi_w), log_odds(pi_l)
    else:
        reward_w, reward_l = pi_w, pi_l

    available = {"gamma_beta_ratio": gamma_beta_ratio}
    extra = {name: available[name] for name in spec.extra_hparams}
    align = spec.align_loss(reward_w, reward_l, beta=beta, **extra)
    losses = lambda_ * align
    if sft_weight:
        losses = losses + sft_weight * (-pi_w)  # §2.4: L_SFT(y_w) = -log π(y_w|x)
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * reward_w).detach(),
        rejected_rewards=(beta * reward_l).detach(),
    )
