"""Pareto front and rank-correlation maths of raydaa.report, on hand-made points."""

import math
import random

import numpy as np
import pytest

from raydaa.report import pareto
from raydaa.report.pareto import pareto_indices, pareto_mask
from raydaa.report.stats import rankdata, spearman

NAN = math.nan


def on_front(points):
    return pareto_mask([q for q, _ in points], [k for _, k in points]).tolist()


def test_empty_set_has_empty_front():
    assert on_front([]) == []
    assert pareto_indices([], []) == []


def test_single_point_is_its_own_front():
    assert on_front([(0.3, 7.0)]) == [True]


def test_all_dominated_but_one():
    """(0.9, 0.1) has the highest quality and the lowest KL: it beats all three others."""
    assert on_front([(0.8, 0.2), (0.9, 0.1), (0.9, 0.3), (0.5, 0.1)]) == [False, True, False, False]


def test_ties_on_one_axis_are_decided_by_the_other():
    """Equal quality: the lower KL dominates (>= and <= hold, KL strictly). Equal KL: the
    higher quality dominates."""
    assert on_front([(0.5, 1.0), (0.5, 2.0)]) == [True, False]
    assert on_front([(0.5, 1.0), (0.6, 1.0)]) == [False, True]


def test_a_trade_off_keeps_every_point():
    """Quality rises with KL: no point is at least as good on both axes as another."""
    assert on_front([(0.5, 1.0), (0.7, 2.0), (0.9, 3.0)]) == [True, True, True]


def test_duplicates_both_stay_or_both_go():
    """Identical points: neither is strictly better, so both stay when nothing else beats
    them, and both go when a third point does."""
    assert on_front([(0.7, 1.0), (0.7, 1.0), (0.5, 2.0)]) == [True, True, False]
    assert on_front([(0.7, 1.0), (0.6, 2.0), (0.6, 2.0)]) == [True, False, False]


def test_non_finite_rows_are_never_on_the_front_and_dominate_nothing():
    """A failed trial's (NaN quality, any KL) and a NaN KL are off the front; (NaN, 0.0)
    would beat (0.5, 1.0) on KL but must not remove it; an infinite KL is excluded too."""
    points = [(NAN, 0.0), (0.9, NAN), (0.5, 1.0), (0.95, math.inf)]
    assert on_front(points) == [False, False, True, False]
    assert on_front([(NAN, NAN)]) == [False]


def test_indices_are_ordered_by_kl_for_drawing():
    quality = [0.9, 0.5, 0.7, 0.4]
    kl = [3.0, 1.0, 2.0, 5.0]  # the last is dominated by every other point
    assert pareto_indices(quality, kl) == [1, 2, 0]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        pareto_mask([0.1, 0.2], [0.1])


def test_blocked_comparison_matches_a_plain_double_loop(monkeypatch):
    """Small integer grids make many ties and duplicates; blocks of 7 split the points."""
    monkeypatch.setattr(pareto, "_BLOCK", 7)
    rng = random.Random(0)
    points = [(rng.randint(0, 5), rng.randint(0, 5)) for _ in range(60)] + [(NAN, 0), (3, NAN)]

    def dominated(i):
        qi, ki = points[i]
        if not (math.isfinite(qi) and math.isfinite(ki)):
            return True
        return any(
            qj >= qi and kj <= ki and (qj > qi or kj < ki)
            for j, (qj, kj) in enumerate(points)
            if j != i and math.isfinite(qj) and math.isfinite(kj)
        )

    expected = [not dominated(i) for i in range(len(points))]
    assert on_front(points) == expected
    assert 0 < sum(expected) < len(points)


def test_rankdata_averages_ties():
    """[5, 5, 7, 1]: 1 is rank 1, the two 5s share ranks 2 and 3 -> 2.5, 7 is rank 4."""
    assert rankdata([5, 5, 7, 1]).tolist() == [2.5, 2.5, 4.0, 1.0]


def test_spearman_by_hand():
    """x = 1..4, y = [10, 20, 40, 30]: rank differences d = [0, 0, -1, 1], no ties, so
    ρ = 1 - 6 Σd² / (n (n² - 1)) = 1 - 12 / 60 = 0.8."""
    rho, n = spearman([1, 2, 3, 4], [10, 20, 40, 30])
    assert (round(rho, 12), n) == (0.8, 4)


def test_spearman_with_ties_is_pearson_of_average_ranks():
    """x ranks [1, 2, 3], y = [5, 5, 7] ranks [1.5, 1.5, 3]. Centred: [-1, 0, 1] and
    [-0.5, -0.5, 1]; Σ products = 1.5, Σx² = 2, Σy² = 1.5; ρ = 1.5 / √3 = 0.8660."""
    rho, _ = spearman([1, 2, 3], [5, 5, 7])
    assert rho == pytest.approx(1.5 / math.sqrt(3))


def test_spearman_drops_non_finite_pairs_and_needs_three_varying_points():
    """β falling, KL rising once the NaN pair is dropped: ρ = -1 over 3 pairs."""
    assert spearman([0.5, 0.1, 0.01, 0.001], [1.0, 2.0, NAN, 4.0]) == (-1.0, 3)
    rho, n = spearman([0.1, 0.2], [1.0, 2.0])
    assert math.isnan(rho) and n == 2
    rho, n = spearman([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    assert math.isnan(rho) and n == 3


def test_spearman_is_symmetric_and_sign_flips():
    x, y = np.array([3.0, 1.0, 4.0, 1.5, 5.0]), np.array([2.0, 7.0, 1.0, 8.0, 2.5])
    assert spearman(x, y)[0] == pytest.approx(spearman(y, x)[0])
    assert spearman(x, -y)[0] == pytest.approx(-spearman(x, y)[0])
