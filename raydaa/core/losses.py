"""The paper's eight Direct Alignment Algorithm losses as pure functions (no Ray, no model).

Paper: "The Differences Between Direct Alignment Algorithms are a Blur", §2.3-3.1.
Every method is one function of two per-example "rewards" (shape (B,)) and keyword-only
hyperparameters; `METHOD_SPECS` (raydaa.core.methods) says which reward each method reads:

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
from typing import NamedTuple

import torch
import torch.nn.functional as F

# The method registry and the loss configuration are torch-free (reports and the CLI read
# them); they are part of the loss library's contract, so they are importable from here.
from raydaa.core.methods import (  # noqa: F401
    LOSS_FIELDS,
    METHOD_SPECS,
    METHODS,
    NORMALIZATIONS,
    LossConfig,
    MethodSpec,
    NormalizationPolicy,
    PreferenceKind,
    RewardKind,
    get_spec,
    uses_length_normalization,
)

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
# Each method's L_align; what each method needs is in raydaa.core.methods (torch-free)
# ---------------------------------------------------------------------------------------

ALIGN_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "simpo": simpo_loss,
    "nca": nca_loss,
    "cal_dpo": cal_dpo_loss,
    "apo_zero": apo_zero_loss,
    "orpo": orpo_loss,
    "asft": asft_loss,
}
"""L_align(reward_w, reward_l, *, beta[, the method's extra hyperparameters]) -> (B,)."""
assert tuple(ALIGN_LOSSES) == METHODS, "every registered method has exactly one loss"


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
    method: str | LossConfig,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float | None = None,
    lambda_: float = 1.0,
    sft_weight: float = 0.0,
    gamma_beta_ratio: float = 0.5,
) -> PreferenceLoss:
    """Per-example loss of `method` on a batch of preference pairs.

    Args:
        method: one of METHODS, or a whole LossConfig (then give no hyperparameters:
            the config's are used).
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
    if isinstance(method, LossConfig):
        if beta is not None:
            raise TypeError("preference_loss: give a LossConfig or keyword hyperparameters, not both")
        config = method
    else:
        if beta is None:
            raise TypeError(f"preference_loss: {method} needs beta")
        extras = {"gamma_beta_ratio": gamma_beta_ratio}
        config = LossConfig(
            method,
            beta,
            lambda_,
            sft_weight,
            **{k: v for k, v in extras.items() if k in get_spec(method).extra_hparams},
        )
    spec, method, beta = config.spec, config.method, config.beta
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

    extra = {name: getattr(config, name) for name in spec.extra_hparams}
    align = ALIGN_LOSSES[method](reward_w, reward_l, beta=beta, **extra)
    losses = config.lambda_ * align
    if config.sft_weight:
        losses = losses + config.sft_weight * (-pi_w)  # §2.4: L_SFT(y_w) = -log π(y_w|x)
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * reward_w).detach(),
        rejected_rewards=(beta * reward_l).detach(),
    )
