"""The front hypervolume (quality ↑, KL ↓) the report prints per method, by hand.

Three front points (quality, KL) = (0.5, 0.2), (0.6, 0.5), (0.7, 1.0) and the reference
point (0, 1.1): the dominated area is a staircase of three rectangles, taken along KL,

    KL 0.2 .. 0.5   height 0.5   0.3 x 0.5 = 0.15
    KL 0.5 .. 1.0   height 0.6   0.5 x 0.6 = 0.30
    KL 1.0 .. 1.1   height 0.7   0.1 x 0.7 = 0.07      total 0.52

A dominated point (0.4, 0.6) and a failed one (NaN) add nothing.
"""

import math

import pytest

from raydaa.report import tables
from raydaa.report.analysis import analyse
from raydaa.report.build import render_markdown
from raydaa.report.pareto import hypervolume

FRONT = [(0.5, 0.2), (0.6, 0.5), (0.7, 1.0)]


def test_a_three_point_front_by_hand():
    quality, kl = zip(*FRONT, (0.4, 0.6), (math.nan, 0.1), strict=True)
    assert hypervolume(quality, kl, (0.0, 1.1)) == pytest.approx(0.52)
    assert hypervolume([q for q, _ in FRONT], [k for _, k in FRONT], (0.0, 1.1)) == pytest.approx(0.52)
    # beyond the reference point a point adds nothing; no point, no area
    assert hypervolume([0.9], [1.2], (0.0, 1.1)) == 0.0
    assert hypervolume([], [], (0.0, 1.1)) == 0.0


def rows():
    def row(trial, method, quality, kl, lr=1e-6, status="finished", seed=0):
        return {"trial_id": trial, "method": method, "beta": 0.1 * (1 + len(trial)), "lr": lr,
                "lambda_": 1.0, "sft_weight": 0.0, "gamma_beta_ratio": None, "epochs": 1,
                "normalization": "paper", "seed": seed, "status": status, "error": "",
                "quality": quality, "kl": kl}  # fmt: skip

    return [
        *(row(f"d{i}", "dpo", q, k) for i, (q, k) in enumerate(FRONT)),
        row("d9", "dpo", math.nan, 1.0, status="diverged"),
        row("n0", "nca", 0.6, 0.4),
        row("n1", "nca", 0.62, 0.4, lr=2e-6),
    ]


def test_the_report_measures_every_method_from_one_stated_reference_point():
    analysis = analyse(rows())
    assert analysis.hv_reference == pytest.approx((0.0, 1.1))  # 1.1 x the largest KL, 1.0
    by_method = {v.name: v.hypervolume for v in analysis.variants}
    assert by_method["dpo"] == pytest.approx(0.52)
    assert by_method["nca"] == pytest.approx(0.62 * (1.1 - 0.4))  # its best point alone
    summary = {r["method"]: r for r in tables.summary_table(analysis)[1]}
    assert summary["dpo"]["front_hypervolume"] == pytest.approx(0.52)
    assert summary["nca"]["hv_ref_kl"] == pytest.approx(1.1)
    markdown = render_markdown(analysis, "tiny", "store", ["a", "b", "c"])
    assert "from the reference point quality 0, KL 1.1." in markdown
    assert "| dpo | 3 | 0.5200 |" in markdown


def test_without_a_finite_kl_there_is_no_hypervolume():
    analysis = analyse([r | {"kl": math.nan} for r in rows()])
    assert all(math.isnan(v.hypervolume) for v in analysis.variants)
    assert "no front hypervolume yet" in render_markdown(analysis, "tiny", "store", ["a", "b", "c"])
