"""The report's figures, each as a PNG (matplotlib, Agg, no pyplot state) and an
interactive HTML page (plotly), drawn from one backend-neutral description.

    pareto_methods        quality vs KL, best lr per β, every method with its own front
    pareto_kinds          the same points pooled into pairwise vs pointwise fronts
                          (paper Figures 3 and 6; two-stage variants only)
    beta_sensitivity      quality vs β (log x), best lr per β, a 95% band per method
                          (paper Figure 1)

Interval bars are the store's 95% intervals on both axes. Each point of a Pareto plot is
labelled with its β (and its lr where the series' points do not share one), so a printed
figure reads without hovering.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

from raydaa.report.analysis import Analysis, VariantReport
from raydaa.report.select import Row
from raydaa.report.tables import hp

# matplotlib's tab10, indexed by the registry order, so a method keeps its colour.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
KIND_COLORS = {"pairwise": "#1f77b4", "pointwise": "#d62728"}
_OTHER_COLOR = "#000000"  # external checkpoints: black, apart from every method's colour
NO_DATA = "no finished trial with a finite quality and KL yet"


@dataclass
class Series:
    label: str
    color: str
    x: list[float]
    y: list[float]
    x_low: list[float] | None = None
    x_high: list[float] | None = None
    y_low: list[float] | None = None
    y_high: list[float] | None = None
    hover: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """Short text drawn beside each point (`β=0.01`, `β=0.01, lr=1e-4`); [] draws none."""
    line: list[int] | None = None
    """Indices joined by a line, in drawing order; None: all points in order."""
    dashed: bool = False
    band: bool = False
    """Draw the y interval as a shaded band instead of bars."""


@dataclass
class Chart:
    name: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    logx: bool = False
    xticks: list[tuple[float, str]] | None = None
    """(position, label) ticks for a categorical x axis (e.g. base, 1%, ..., 100%)."""


def _value(row: Row, key: str) -> float:
    value = row.get(key)
    return math.nan if value is None else float(value)


def _method_color(name: str) -> str:
    from raydaa.core.methods import METHODS

    method = name.removesuffix("+sft")
    if method not in METHODS:  # an external checkpoint's variant
        return _OTHER_COLOR
    return _PALETTE[METHODS.index(method) % len(_PALETTE)]


def _hover(v_name: str, row: Row) -> str:
    text = (f"{v_name}  β={hp(row.get('beta'))}  lr={hp(row.get('lr'))}<br>"
            f"quality {_value(row, 'quality'):.3f}  KL {_value(row, 'kl'):.3f}<br>"
            f"trial {row.get('trial_id')}")  # fmt: skip
    if row.get("sft_weight"):
        text += f"  λ={hp(row.get('lambda_'))}"
    return text


def short_number(value: float) -> str:
    """0.001, 0.5, 2 as written; below 1e-3 a plain exponent: 1e-4, 5e-7 (not 1e-04)."""
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def point_labels(rows: list[Row]) -> list[str]:
    """`β=0.01` per point; `β=0.01, lr=1e-4` when the points' lrs differ (the front then
    mixes learning rates, which the reader must see)."""
    lrs = {_value(r, "lr") for r in rows}
    with_lr = len({lr for lr in lrs if math.isfinite(lr)}) > 1
    labels = []
    for row in rows:
        text = f"β={short_number(_value(row, 'beta'))}"
        if with_lr:
            text += f", lr={short_number(_value(row, 'lr'))}"
        labels.append(text)
    return labels


def _points_series(label: str, color: str, rows: list[Row], names: list[str], front: list[bool],
                   dashed: bool = False) -> Series:  # fmt: skip
    """Quality vs KL points, each labelled; the line joins the front's points by increasing KL."""
    kl = [_value(r, "kl") for r in rows]
    quality = [_value(r, "quality") for r in rows]
    on = [i for i, f in enumerate(front) if f]
    return Series(
        label=label,
        color=color,
        x=kl,
        y=quality,
        x_low=[_value(r, "kl_low") for r in rows],
        x_high=[_value(r, "kl_high") for r in rows],
        y_low=[_value(r, "quality_low") for r in rows],
        y_high=[_value(r, "quality_high") for r in rows],
        hover=[_hover(n, r) for n, r in zip(names, rows, strict=True)],
        labels=point_labels(rows),
        line=sorted(on, key=lambda i: (kl[i], -quality[i])),
        dashed=dashed,
    )


def pareto_methods_chart(analysis: Analysis, scenario: str) -> Chart:
    series = [
        _points_series(
            v.name,
            _method_color(v.name),
            v.points,
            [v.name] * len(v.points),
            v.on_front,
            dashed=v.name.endswith("+sft"),
        )  # fmt: skip
        for v in analysis.variants
        if v.points
    ]
    return Chart("pareto_methods", f"{scenario}: quality vs KL, best lr per β, front per method",
                 "KL(π ‖ π_ref)", "quality", series)  # fmt: skip


def pareto_kinds_chart(analysis: Analysis, scenario: str) -> Chart:
    series = []
    for kind, color in KIND_COLORS.items():
        members: list[VariantReport] = [
            v for v in analysis.variants if v.kind == kind and not v.name.endswith("+sft")
        ]
        rows = [p for v in members for p in v.points]
        if rows:
            names = [v.name for v in members for _ in v.points]
            front = [f for v in members for f in v.on_kind_front]
            series.append(
                _points_series(kind, color, rows, names, front, dashed=kind == "pointwise")
            )
    return Chart("pareto_kinds", f"{scenario}: pairwise vs pointwise Pareto fronts",
                 "KL(π ‖ π_ref)", "quality", series)  # fmt: skip


def beta_sensitivity_chart(analysis: Analysis, scenario: str) -> Chart:
    series = []
    for v in analysis.variants:
        rows = [p for p in v.points if _value(p, "beta") > 0]  # a log axis holds β > 0 only
        if rows:
            series.append(
                Series(
                    label=v.name,
                    color=_method_color(v.name),
                    x=[_value(r, "beta") for r in rows],
                    y=[_value(r, "quality") for r in rows],
                    y_low=[_value(r, "quality_low") for r in rows],
                    y_high=[_value(r, "quality_high") for r in rows],
                    hover=[_hover(v.name, r) for r in rows],
                    dashed=v.name.endswith("+sft"),
                    band=True,
                )
            )
    return Chart("beta_sensitivity", f"{scenario}: quality vs β, best lr per β",
                 "β", "quality", series, logx=True)  # fmt: skip


def charts(analysis: Analysis, scenario: str) -> list[Chart]:
    return [
        pareto_methods_chart(analysis, scenario),
        pareto_kinds_chart(analysis, scenario),
        beta_sensitivity_chart(analysis, scenario),
    ]


def _errors(center: list[float], low: list[float] | None, high: list[float] | None):
    """(below, above) bar lengths; a missing interval draws no bar."""
    if low is None or high is None:
        return None

    def length(a: float, b: float) -> float:
        return max(0.0, a - b) if math.isfinite(a) and math.isfinite(b) else 0.0

    return [
        [length(c, lo) for c, lo in zip(center, low, strict=True)],
        [length(hi, c) for c, hi in zip(center, high, strict=True)],
    ]


def render_png(chart: Chart) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)  # fixed: no layout pass
    ax = fig.add_subplot()
    for s in chart.series:
        style = "--" if s.dashed else "-"
        if s.band and len(s.x) > 1:
            ax.fill_between(s.x, s.y_low, s.y_high, color=s.color, alpha=0.15, linewidth=0)
            ax.plot(s.x, s.y, style, marker="o", color=s.color, label=s.label)
            continue
        if s.band:  # one β: a band has no width, so a bar shows the interval
            ax.errorbar(s.x, s.y, yerr=_errors(s.y, s.y_low, s.y_high), fmt="o", color=s.color,
                        capsize=3, label=s.label)  # fmt: skip
            continue
        ax.errorbar(s.x, s.y, xerr=_errors(s.x, s.x_low, s.x_high),
                    yerr=_errors(s.y, s.y_low, s.y_high), fmt="o", color=s.color, alpha=0.45,
                    elinewidth=0.8, capsize=2, markersize=4)  # fmt: skip
        line = s.line if s.line is not None else list(range(len(s.x)))
        ax.plot([s.x[i] for i in line], [s.y[i] for i in line], style, marker="o",
                color=s.color, label=f"{s.label} (front)")  # fmt: skip
        for x, y, text in zip(s.x, s.y, s.labels, strict=False):
            if math.isfinite(x) and math.isfinite(y):  # a NaN point is not drawn either
                # a faint white box keeps the text readable over the interval bars
                ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points",
                            fontsize=6.5, color=s.color,
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none",
                                      alpha=0.7))  # fmt: skip
    if chart.logx:
        ax.set_xscale("log")
    if chart.xticks:
        ax.set_xticks([x for x, _ in chart.xticks], [label for _, label in chart.xticks])
    if not chart.series:
        ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize="small")
    ax.set(title=chart.title, xlabel=chart.xlabel, ylabel=chart.ylabel)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _plotly_errors(center, low, high, visible: bool = True):
    bars = _errors(center, low, high)
    if bars is None:
        return None
    return dict(type="data", symmetric=False, arrayminus=bars[0], array=bars[1], visible=visible,
                thickness=1, width=2)  # fmt: skip


def render_html(chart: Chart, plotly_js: str | bool) -> str:
    """plotly_js: "directory" (a plotly.min.js next to the page), True (inline, ~4.8 MB per
    page) or "cdn" (needs the network)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in chart.series:
        dash = "dash" if s.dashed else "solid"
        if s.band:
            fig.add_trace(go.Scatter(x=s.x, y=s.y_high, mode="lines", line=dict(width=0),
                                     legendgroup=s.label, showlegend=False, hoverinfo="skip"))  # fmt: skip
            fig.add_trace(go.Scatter(x=s.x, y=s.y_low, mode="lines", line=dict(width=0),
                                     fill="tonexty", fillcolor=_rgba(s.color, 0.15),
                                     legendgroup=s.label, showlegend=False, hoverinfo="skip"))  # fmt: skip
            fig.add_trace(go.Scatter(x=s.x, y=s.y, mode="lines+markers", name=s.label,
                                     legendgroup=s.label, line=dict(color=s.color, dash=dash),
                                     error_y=_plotly_errors(s.y, s.y_low, s.y_high, len(s.x) == 1),
                                     text=s.hover, hoverinfo="text"))  # fmt: skip
            continue
        # labels as visible text beside each point; the hover keeps its longer text
        fig.add_trace(go.Scatter(x=s.x, y=s.y, mode="markers+text" if s.labels else "markers",
                                 name=f"{s.label} (points)", legendgroup=s.label,
                                 marker=dict(color=s.color, opacity=0.5),
                                 error_x=_plotly_errors(s.x, s.x_low, s.x_high),
                                 error_y=_plotly_errors(s.y, s.y_low, s.y_high),
                                 text=s.labels or None, textposition="top right",
                                 textfont=dict(size=9, color=s.color),
                                 hovertext=s.hover, hoverinfo="text"))  # fmt: skip
        line = s.line if s.line is not None else list(range(len(s.x)))
        fig.add_trace(go.Scatter(x=[s.x[i] for i in line], y=[s.y[i] for i in line],
                                 mode="lines+markers", name=f"{s.label} (front)",
                                 legendgroup=s.label, line=dict(color=s.color, dash=dash),
                                 text=[s.hover[i] for i in line], hoverinfo="text"))  # fmt: skip
    if not chart.series:
        fig.add_annotation(text=NO_DATA, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(title=chart.title, xaxis_title=chart.xlabel, yaxis_title=chart.ylabel,
                      template="plotly_white", hovermode="closest")  # fmt: skip
    if chart.logx:
        fig.update_xaxes(type="log")
    if chart.xticks:
        fig.update_xaxes(tickvals=[x for x, _ in chart.xticks],
                         ticktext=[label for _, label in chart.xticks])  # fmt: skip
    return fig.to_html(include_plotlyjs=plotly_js, full_html=True)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
