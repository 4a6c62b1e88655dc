"""The loss library against hand-computed values, the paper's identities and finite differences."""

import math

import mpmath
import pytest
import torch

from raydaa.losses import (
    METHOD_SPECS,
    METHODS,
    log1mexp,
    log_odds,
    preference_loss,
    uses_length_normalization,
)

LN2 = math.log(2.0)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    """-log σ(-x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------

# policy (-1, -2), reference (-1.5, -1.5): r_w = 0.5, r_l = -0.5, Δr = 1
PI_W, PI_L, REF_W, REF_L = t(-1.0), t(-2.0), t(-1.5), t(-1.5)


def test_dpo_by_hand():
    """β = 2, Δr = 1: L = -log σ(2) = log(1 + e^-2) = 0.126928; rewards β r = ±1."""
    out = preference_loss("dpo", PI_W, PI_L, REF_W, REF_L, beta=2.0)
    assert out.losses.item() == pytest.approx(softplus(-2.0), abs=1e-12)
    assert out.losses.item() == pytest.approx(0.126928, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(1.0)
    assert out.rejected_rewards.item() == pytest.approx(-1.0)
    assert not out.chosen_rewards.requires_grad


def test_ipo_by_hand():
    """β = 0.25: 1/(2β) = 2, L = (Δr - 2)² = (1 - 2)² = 1."""
    out = preference_loss("ipo", PI_W, PI_L, REF_W, REF_L, beta=0.25)
    assert out.losses.item() == pytest.approx(1.0, abs=1e-12)


def test_simpo_by_hand_ignores_reference():
    """s_w = -1, s_l = -3, β = 2, γ/β = 0.5: L = -log σ(2·(2 - 0.5)) = log(1 + e^-3) = 0.048587.
    The reference is not read: passing none, or a different one, gives the same value."""
    expected = softplus(-3.0)
    assert preference_loss("simpo", t(-1.0), t(-3.0), beta=2.0).losses.item() == pytest.approx(
        expected
    )
    other_ref = preference_loss("simpo", t(-1.0), t(-3.0), t(5.0), t(-9.0), beta=2.0)
    assert other_ref.losses.item() == pytest.approx(expected)
    assert expected == pytest.approx(0.048587, abs=1e-6)
    gamma_1 = preference_loss("simpo", t(-1.0), t(-3.0), beta=2.0, gamma_beta_ratio=1.0)
    assert gamma_1.losses.item() == pytest.approx(softplus(-2.0))  # σ(2·(2 - 1))


def test_nca_by_hand():
    """β = 2, βr_w = 1, βr_l = -1:
    L = -log σ(1) - ½ log σ(-1) - ½ log σ(1)
      = log(1+e^-1) + ½ log(1+e) + ½ log(1+e^-1) = 0.313262 + 0.656631 + 0.156631 = 1.126524."""
    out = preference_loss("nca", PI_W, PI_L, REF_W, REF_L, beta=2.0)
    expected = softplus(-1.0) + 0.5 * softplus(1.0) + 0.5 * softplus(-1.0)
    assert out.losses.item() == pytest.approx(expected, abs=1e-12)
    assert out.losses.item() == pytest.approx(1.126524, abs=1e-6)


def test_cal_dpo_by_hand():
    """β = 0.5: 1/(2β) = 1. L = -log σ(1) + (0.5 - 1)² + (-0.5 + 1)² = 0.313262 + 0.5."""
    out = preference_loss("cal_dpo", PI_W, PI_L, REF_W, REF_L, beta=0.5)
    assert out.losses.item() == pytest.approx(softplus(-1.0) + 0.5, abs=1e-12)
    assert out.losses.item() == pytest.approx(0.813262, abs=1e-6)


def test_apo_zero_by_hand():
    """β = 2: L = 1 - σ(1) + σ(-1) = 1 - 0.731059 + 0.268941 = 0.537883."""
    out = preference_loss("apo_zero", PI_W, PI_L, REF_W, REF_L, beta=2.0)
    sig = 1.0 / (1.0 + math.exp(-1.0))
    assert out.losses.item() == pytest.approx(1.0 - sig + (1.0 - sig), abs=1e-12)
    assert out.losses.item() == pytest.approx(0.537883, abs=1e-6)


# p_w = 0.5 (odds 1, o_w = 0), p_l = 0.2 (odds 1/4, o_l = -ln 4)
LOGP_W, LOGP_L = t(math.log(0.5)), t(math.log(0.2))


def test_orpo_by_hand_single_and_two_stage():
    """β = 1: L_align = -log σ(0 + ln 4) = -log(4/5) = 0.223144.
    Single stage, λ = 0.5: -log 0.5 + 0.5·0.223144 = 0.804719 (paper §2.4).
    Two stage, β = 0.5: -log σ(0.5 ln 4) = -log σ(ln 2) = -log(2/3) = 0.405465."""
    align = preference_loss("orpo", LOGP_W, LOGP_L, beta=1.0)
    assert align.losses.item() == pytest.approx(-math.log(0.8), abs=1e-12)
    single = preference_loss("orpo", LOGP_W, LOGP_L, beta=1.0, lambda_=0.5, sft_weight=1.0)
    assert single.losses.item() == pytest.approx(LN2 + 0.5 * -math.log(0.8), abs=1e-12)
    assert single.losses.item() == pytest.approx(0.804719, abs=1e-6)
    tempered = preference_loss("orpo", LOGP_W, LOGP_L, beta=0.5)
    assert tempered.losses.item() == pytest.approx(-math.log(2.0 / 3.0), abs=1e-12)
    assert tempered.rejected_rewards.item() == pytest.approx(0.5 * -math.log(4.0))


def test_asft_by_hand():
    """β = 1: L_align = -log σ(0) - log σ(ln 4) = ln 2 - log 0.8 = -log p_w - log(1 - p_l)
    = 0.916291. β = 0.5: ln 2 - log σ(ln 2) = ln 2 + log 1.5 = 1.098612."""
    out = preference_loss("asft", LOGP_W, LOGP_L, beta=1.0)
    assert out.losses.item() == pytest.approx(-math.log(0.5) - math.log(0.8), abs=1e-12)
    assert out.losses.item() == pytest.approx(0.916291, abs=1e-6)
    tempered = preference_loss("asft", LOGP_W, LOGP_L, beta=0.5)
    assert tempered.losses.item() == pytest.approx(LN2 + math.log(1.5), abs=1e-12)


# ---------------------------------------------------------------------------------------
# Step 0: policy = reference, every r^ref = 0
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_step_zero_closed_forms(beta):
    """With π = π_ref every r = 0:
    DPO -log σ(0) = ln 2;  IPO (0 - 1/(2β))² = 1/(4β²);  NCA 3 terms of ln 2 weighted 1+½+½ = 2 ln 2;
    Cal-DPO ln 2 + 2·(1/(2β))² = ln 2 + 1/(2β²);  APO-Zero 1 - ½ + ½ = 1."""
    logps = torch.tensor([-3.0, -17.5, -0.2], dtype=torch.float64)
    expected = {
        "dpo": LN2,
        "ipo": 1.0 / (4 * beta**2),
        "nca": 2 * LN2,
        "cal_dpo": LN2 + 1.0 / (2 * beta**2),
        "apo_zero": 1.0,
    }
    for method, value in expected.items():
        out = preference_loss(method, logps, logps - 1.0, logps, logps - 1.0, beta=beta)
        torch.testing.assert_close(
            out.losses, torch.full_like(logps, value), rtol=1e-12, atol=1e-12
        )
        assert torch.all(out.chosen_rewards == 0)


# ---------------------------------------------------------------------------------------
# The paper's identities (Theorem 3.1, Theorem 3.2, Corollary 3.3) on random inputs
# ---------------------------------------------------------------------------------------


def random_logps(n: int, seed: int, low: float = -8.0, high: float = -1e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("lam", [0.1, 0.2, 0.5, 1.0])
def test_theorem_3_1_asft_is_bce(lam):
    """Thm 3.1: single-stage ASFT = -(1+λ) log p_w - λ log(1 - p_l)."""
    lw, ll = random_logps(500, 1), random_logps(500, 2)
    out = preference_loss("asft", lw, ll, beta=1.0, lambda_=lam, sft_weight=1.0).losses
    bce = -(1 + lam) * lw - lam * torch.log(1 - torch.exp(ll))
    torch.testing.assert_close(out, bce, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0])
def test_theorem_3_2_orpo_is_asft_plus_symmetric_term(lam):
    """Thm 3.2: ORPO = ASFT + λ log(p_w(1 - p_l) + p_l(1 - p_w))."""
    lw, ll = random_logps(500, 3), random_logps(500, 4)
    pw, pl = lw.exp(), ll.exp()
    orpo = preference_loss("orpo", lw, ll, beta=1.0, lambda_=lam, sft_weight=1.0).losses
    asft = preference_loss("asft", lw, ll, beta=1.0, lambda_=lam, sft_weight=1.0).losses
    torch.testing.assert_close(
        orpo, asft + lam * torch.log(pw * (1 - pl) + pl * (1 - pw)), rtol=1e-10, atol=1e-10
    )


def test_corollary_3_3_orpo_below_asft():
    """Cor 3.3: ORPO ≤ ASFT, single-stage and alignment terms alone. The extra term's argument
    p_w + p_l - 2 p_w p_l ≤ 1 for all p in [0, 1] ((1-p_w)(1-p_l) + p_w p_l ≥ 0), so this also
    holds where p_w + p_l > 1, which normalized probabilities allow."""
    lw, ll = (
        random_logps(2000, 5, low=-6.0, high=-1e-6),
        random_logps(2000, 6, low=-6.0, high=-1e-6),
    )
    assert ((lw.exp() + ll.exp()) > 1).any()
    for kwargs in ({"sft_weight": 1.0, "lambda_": 0.5}, {"sft_weight": 0.0, "lambda_": 1.0}):
        orpo = preference_loss("orpo", lw, ll, beta=1.0, **kwargs).losses
        asft = preference_loss("asft", lw, ll, beta=1.0, **kwargs).losses
        assert torch.all(orpo <= asft + 1e-12)


def test_sft_weight_and_lambda_compose_linearly():
    """Total = sft_weight·(-log π_w) + λ·L_align, for every method."""
    lw, ll, rw, rl = (random_logps(16, s) for s in range(10, 14))
    for method in METHODS:
        align = preference_loss(method, lw, ll, rw, rl, beta=0.3).losses
        total = preference_loss(
            method, lw, ll, rw, rl, beta=0.3, lambda_=0.2, sft_weight=0.7
        ).losses
        torch.testing.assert_close(total, 0.7 * -lw + 0.2 * align)


# ---------------------------------------------------------------------------------------
# Odds-ratio numerics: stable from log p = -1e-8 down to -1e4
# ---------------------------------------------------------------------------------------

EXTREME_LOGPS = [-1e-8, -1e-6, -1e-3, -0.5, -0.7, -1.0, -20.0, -100.0, -1e4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log1mexp_matches_reference_and_is_finite(dtype):
    """log(1 - e^x) against 50-digit arithmetic (mpmath) over the whole range."""
    mpmath.mp.dps = 50
    x = torch.tensor(EXTREME_LOGPS, dtype=dtype)
    expected = torch.tensor(
        [float(mpmath.log(1 - mpmath.exp(v))) for v in EXTREME_LOGPS], dtype=dtype
    )
    torch.testing.assert_close(
        log1mexp(x), expected, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-30
    )


@pytest.mark.parametrize("method", ["orpo", "asft"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 2.0])
def test_odds_methods_finite_losses_and_gradients(method, dtype, beta):
    """Every (chosen, rejected) combination of extreme log-probs, with and without the SFT
    term: finite losses and finite gradients (no inf/nan leaking from log1mexp's branches)."""
    grid = torch.tensor(EXTREME_LOGPS, dtype=dtype)
    lw = grid.repeat_interleave(len(EXTREME_LOGPS)).clone().requires_grad_(True)
    ll = grid.repeat(len(EXTREME_LOGPS)).clone().requires_grad_(True)
    out = preference_loss(method, lw, ll, beta=beta, lambda_=0.5, sft_weight=1.0)
    assert torch.isfinite(out.losses).all()
    out.losses.sum().backward()
    assert torch.isfinite(lw.grad).all() and torch.isfinite(ll.grad).all()


def test_log_odds_at_exactly_zero_stays_finite():
    """log π = 0 (p = 1 in floating point) is clamped to a huge but finite odds."""
    x = torch.zeros(2, requires_grad=True)
    o = log_odds(x)
    assert torch.isfinite(o).all() and (o > 40).all()
    o.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("method", ["orpo", "asft"])
@pytest.mark.parametrize("beta", [0.05, 1.0])
@pytest.mark.parametrize(
    "point",
    [(-1e-6, -3.0), (-1e-3, -1e-4), (-2.0, -1e-5), (-30.0, -40.0), (-0.7, -0.69)],
    ids=["pw->1", "both->1", "pl->1", "both->0", "around-ln2"],
)
def test_odds_gradients_match_finite_differences(method, beta, point):
    """Autograd d L / d log p against central differences in float64, with a step
    proportional to |log p| so points next to 0 are not stepped across it."""
    lw0, ll0 = point
    lw, ll = t(lw0).requires_grad_(True), t(ll0).requires_grad_(True)
    loss = preference_loss(method, lw, ll, beta=beta, lambda_=1.0, sft_weight=0.5).losses.sum()
    gw, gl = torch.autograd.grad(loss, (lw, ll))

    def f(a: float, b: float) -> float:
        return preference_loss(
            method, t(a), t(b), beta=beta, lambda_=1.0, sft_weight=0.5
        ).losses.item()

    hw, hl = 1e-5 * abs(lw0), 1e-5 * abs(ll0)
    fd_w = (f(lw0 + hw, ll0) - f(lw0 - hw, ll0)) / (2 * hw)
    fd_l = (f(lw0, ll0 + hl) - f(lw0, ll0 - hl)) / (2 * hl)
    assert gw.item() == pytest.approx(fd_w, rel=1e-6, abs=1e-9)
    assert gl.item() == pytest.approx(fd_l, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------
# Registry and errors
# ---------------------------------------------------------------------------------------


def test_registry_matches_paper_table_3_and_section_3():
    assert METHODS == ("dpo", "ipo", "simpo", "nca", "cal_dpo", "apo_zero", "orpo", "asft")
    normalized = {m for m, s in METHOD_SPECS.items() if s.original_length_normalized}
    assert normalized == {"simpo", "orpo", "asft"}  # paper Table 3
    pointwise = {m for m, s in METHOD_SPECS.items() if s.preference_kind == "pointwise"}
    assert pointwise == {"nca", "cal_dpo", "apo_zero", "asft"}
    assert {m for m, s in METHOD_SPECS.items() if s.needs_reference} == {
        "dpo",
        "ipo",
        "nca",
        "cal_dpo",
        "apo_zero",
    }
    assert {m for m, s in METHOD_SPECS.items() if s.reward_kind == "odds"} == {"orpo", "asft"}
    assert uses_length_normalization("dpo", "paper") and not uses_length_normalization(
        "dpo", "original"
    )
    assert uses_length_normalization("simpo", "original") and not uses_length_normalization(
        "simpo", "sum"
    )


def test_errors_name_the_problem():
    x = t(-1.0, -2.0)
    with pytest.raises(ValueError, match="unknown method 'kto'.*dpo"):
        preference_loss("kto", x, x, beta=0.1)
    with pytest.raises(ValueError, match="dpo needs reference"):
        preference_loss("dpo", x, x, beta=0.1)
    with pytest.raises(ValueError, match="beta must be"):
        preference_loss("orpo", x, x, beta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        preference_loss("dpo", x, x, x, t(-1.0), beta=0.1)
    with pytest.raises(ValueError, match="unknown normalization"):
        uses_length_normalization("dpo", "tokens")


def test_bf16_inputs_are_computed_in_float32():
    """A 1e-3 margin vanishes in bf16 arithmetic; the loss upcasts first."""
    lw = torch.tensor([-100.0], dtype=torch.bfloat16)
    out = preference_loss("dpo", lw, lw - 1.0, lw, lw - 1.0, beta=0.1)
    assert out.losses.dtype == torch.float32
    assert out.losses.item() == pytest.approx(LN2, abs=1e-6)
