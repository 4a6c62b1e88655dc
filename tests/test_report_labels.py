"""Point labels on the Pareto plots: each point says its β (and its lr where the series'
points differ in lr), in the chart description, the HTML page and the PNG.

Rows (scenario tiny): DPO's best lr per β mixes learning rates (β 0.01 at lr 1e-6, β 0.1
at lr 5e-7), so its labels carry the lr; NCA's two points share lr 1e-6, so β alone.
The pooled pointwise series is NCA's points only (β alone); the pairwise one DPO's.
"""

import dataclasses
import json

from raydaa.report.analysis import analyse
from raydaa.report.plots import (
    pareto_kinds_chart,
    pareto_methods_chart,
    point_labels,
    render_html,
    render_png,
    short_number,
)


def row(trial, method, beta, lr, quality, kl):
    return {
        "trial_id": trial, "scenario": "tiny", "method": method, "beta": beta, "lr": lr,
        "lambda_": 1.0, "sft_weight": 0.0, "epochs": 1, "seed": 0, "status": "finished",
        "quality": quality, "quality_low": quality - 0.04, "quality_high": quality + 0.04,
        "kl": kl, "kl_low": kl * 0.8, "kl_high": kl * 1.2,
    }  # fmt: skip


ROWS = [
    row("d1", "dpo", 0.01, 1e-6, 0.70, 3.0),
    row("d2", "dpo", 0.01, 5e-7, 0.60, 1.0),
    row("d3", "dpo", 0.1, 5e-7, 0.65, 1.5),
    row("n1", "nca", 0.001, 1e-6, 0.62, 0.8),
    row("n2", "nca", 0.01, 1e-6, 0.58, 0.3),
]


def test_labels_are_short_and_name_the_lr_only_where_it_varies():
    assert [short_number(v) for v in (0.001, 0.5, 1.0, 1e-4, 5e-7, 2.5e-6)] == [
        "0.001", "0.5", "1", "1e-4", "5e-7", "2.5e-6"]  # fmt: skip
    assert point_labels([row("a", "dpo", 0.01, 1e-4, 0.5, 1.0)]) == ["β=0.01"]
    mixed = [row("a", "dpo", 0.01, 1e-4, 0.5, 1.0), row("b", "dpo", 0.1, 3e-4, 0.5, 1.0)]
    assert point_labels(mixed) == ["β=0.01, lr=1e-4", "β=0.1, lr=3e-4"]


def test_pareto_charts_carry_the_labels_and_both_renderers_draw_them():
    analysis = analyse(ROWS)
    methods = {s.label: s for s in pareto_methods_chart(analysis, "tiny").series}
    assert methods["dpo"].labels == ["β=0.01, lr=1e-6", "β=0.1, lr=5e-7"]
    assert methods["nca"].labels == ["β=0.001", "β=0.01"]
    kinds = {s.label: s for s in pareto_kinds_chart(analysis, "tiny").series}
    assert kinds["pointwise"].labels == ["β=0.001", "β=0.01"]
    assert kinds["pairwise"].labels == methods["dpo"].labels

    chart = pareto_methods_chart(analysis, "tiny")
    html = render_html(chart, "directory")
    for text in ("β=0.01, lr=1e-6", "β=0.001"):
        assert json.dumps(text) in html or f'"{text}"' in html, text
    assert '"mode":"markers+text"' in html and '"textposition":"top right"' in html
    assert "trial d1" in html  # the hover keeps its own, longer text

    png = render_png(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    bare = dataclasses.replace(chart, series=[dataclasses.replace(s, labels=[]) for s in chart.series])
    assert render_png(bare) != png  # the labels are drawn, not only described
    assert '"mode":"markers"' in render_html(bare, "directory")


def test_an_external_checkpoint_with_a_beta_is_drawn_in_its_own_colour():
    """A row of method `external` that carries a β (a user's checkpoint, noted with the
    β it was trained at) is a point of its own series, not a crash on the method palette."""
    external = row("external-mine", "external", 0.1, 1e-6, 0.66, 2.0)
    series = {s.label: s for s in pareto_methods_chart(analyse(ROWS + [external]), "tiny").series}
    assert series["external"].labels == ["β=0.1"]
    assert series["external"].color not in {series["dpo"].color, series["nca"].color}
