"""raydaa.report.paired: paired difference, sign-flip p, hierarchical bootstrap, Holm, verdict.

Known answers:
- identical outcomes: every paired difference is 0, so the interval is [0, 0], p = 1 and
  the verdict "indistinguishable";
- a small sample (n = 12 ≤ log2(resamples)): the sign-flip p is exact, so it equals the
  share of all 2^12 sign vectors whose |mean| reaches the observed one, counted by hand
  here, and scipy.stats.permutation_test's exact p;
- a large sample: the permutation p agrees with the paired t-test (scipy.stats.ttest_rel)
  within Monte Carlo error, the bootstrap interval with mean ± 1.96·sd/√n;
- MDE = (z_0.975 + z_0.8) · sd/√n = (1.959964 + 0.841621) · sd/√n.
"""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from raydaa.report.paired import (
    holm,
    paired_difference,
    sign_flip_pvalue,
    verdict,
)

R = 2000  # resamples: enough for these tolerances, fast


def outcomes(rng, n, p_win, p_tie=0.1):
    return rng.choice([0.0, 0.5, 1.0], size=n, p=[1 - p_win - p_tie, p_tie, p_win])


def test_identical_outcomes_are_indistinguishable():
    a = outcomes(np.random.default_rng(0), 300, 0.5)
    r = paired_difference(a, a.copy(), resamples=R)
    assert (r.difference, r.low, r.high, r.p_value, r.sd, r.mde) == (0, 0, 0, 1.0, 0, 0)
    assert r.n == 300 and r.a_mean == r.b_mean == a.mean()
    assert verdict(r.difference, r.p_value) == "indistinguishable"


def test_same_distribution_different_samples_is_not_significant():
    rng = np.random.default_rng(1)
    a, b = outcomes(rng, 400, 0.5), outcomes(rng, 400, 0.5)
    r = paired_difference(a, b, resamples=R)
    assert r.p_value > 0.2 and r.low < 0 < r.high
    assert verdict(r.difference, r.p_value) == "indistinguishable"


def test_small_sample_p_is_the_exact_sign_flip_p():
    d = np.array([1, 0.5, 1, 0, 1, -0.5, 1, 0.5, 0, 1, -1, 0.5])
    observed = abs(d.mean())
    flips = [abs(np.dot(s, d)) / len(d) for s in itertools.product((-1, 1), repeat=len(d))]
    by_hand = sum(f >= observed - 1e-12 for f in flips) / len(flips)
    assert by_hand == 360 / 4096  # the count the enumeration gives
    r = paired_difference(d, np.zeros_like(d), resamples=5000)  # 2^12 = 4096 ≤ 5000: exact
    assert r.p_value == pytest.approx(by_hand, abs=1e-12)
    scipy_p = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                     n_resamples=5000).pvalue  # fmt: skip
    assert r.p_value == pytest.approx(scipy_p, abs=1e-12)


def test_shifted_outcomes_match_the_paired_t_test():
    """B loses 12% of A's wins: the difference is +0.06 ± 0.02 on 600 prompts."""
    rng = np.random.default_rng(2)
    a = outcomes(rng, 600, 0.5)
    b = np.where((a == 1.0) & (rng.random(600) < 0.12), 0.0, a)
    r = paired_difference(a, b, resamples=R)
    d = a - b
    t = stats.ttest_rel(a, b)
    assert r.difference == pytest.approx(d.mean())
    assert r.p_value == pytest.approx(t.pvalue, abs=0.004)  # both ~0.0005-0.002
    assert r.p_value < 0.01 and verdict(r.difference, r.p_value) == "A better"
    assert verdict(-r.difference, r.p_value) == "B better"  # the sign names the winner
    se = d.std(ddof=1) / math.sqrt(600)
    assert (r.sd, r.se) == (pytest.approx(d.std(ddof=1)), pytest.approx(se))
    assert r.low == pytest.approx(d.mean() - 1.96 * se, abs=0.2 * se)
    assert r.high == pytest.approx(d.mean() + 1.96 * se, abs=0.2 * se)
    assert r.mde == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)


def test_random_sign_flips_agree_with_scipy():
    rng = np.random.default_rng(3)
    d = outcomes(rng, 500, 0.45) - outcomes(rng, 500, 0.4)
    ours = sign_flip_pvalue(d, 4000, seed=0)
    theirs = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                    n_resamples=4000, rng=np.random.default_rng(0)).pvalue  # fmt: skip
    assert 0.02 < theirs < 0.3 and ours == pytest.approx(theirs, abs=0.03)


def test_seed_replicates_widen_the_interval_when_seeds_differ():
    """Two seeds per side: if the seeds agree, the hierarchical interval is the 1-D one; if
    A's seeds disagree (one wins 20% more prompts), it is wider."""
    rng = np.random.default_rng(4)
    a0, b = outcomes(rng, 500, 0.5), outcomes(rng, 500, 0.45)
    one = paired_difference(a0, b, resamples=R)
    same = paired_difference(np.stack([a0, a0]), np.stack([b, b]), resamples=R)
    assert same.seeds == (2, 2) and same.test == "hierarchical bootstrap"
    assert same.high - same.low == pytest.approx(one.high - one.low, rel=0.15)
    a1 = np.where(rng.random(500) < 0.2, 1.0, a0)  # a second seed of A, clearly better
    spread = paired_difference(np.stack([a0, a1]), b, resamples=R)
    assert spread.seeds == (2, 1)
    assert spread.difference == pytest.approx((a0.mean() + a1.mean()) / 2 - b.mean())
    assert spread.high - spread.low > 1.3 * (one.high - one.low)
    assert spread.mde > one.mde  # the seed variance is in the standard error too


def test_bad_shapes_name_the_side():
    with pytest.raises(ValueError, match="a has 3 prompts, b has 2"):
        paired_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="b holds NaN"):
        paired_difference([1, 0], [1, math.nan])


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03,
    0.03·2 = 0.06, 0.04·1 = 0.04 -> 0.06 (running max: monotone)."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # (0.01, 0.02, 0.025): 0.03, 0.04, then 0.025·1 = 0.025 raised to 0.04
    assert holm([0.01, 0.02, 0.025]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 1.2 and 0.7 -> capped at 1
    adjusted = holm([0.02, math.nan, 0.01])  # a skipped comparison is not counted in m
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm([]) == []


def test_verdict_threshold_and_sign():
    assert verdict(0.05, 0.049) == "A better"
    assert verdict(-0.05, 0.049) == "B better"
    assert verdict(0.05, 0.05) == "indistinguishable"  # p must be below alpha
    assert verdict(0.05, 0.2, alpha=0.25) == "A better"
    assert verdict(0.05, math.nan) == "indistinguishable"
