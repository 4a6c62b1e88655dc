"""RQ2 (paper §3.1.2, §5.2, Figure 1): does tempering (β) help ORPO and ASFT?

Two-stage ORPO and ASFT (alignment term alone, from the scenario's SFT model), in the
scenario's own namespace:

    stage 1  β = 1 (the untempered methods) over the learning-rate grid: the baseline is
             the best lr there
    stage 2  every other β of the grid, over the same learning rates (the paper: "all
             other hyperparameters are selected via grid search")

Together the two stages are the methods' full two-stage grids, which RQ3 shares: run
first, RQ2 leaves RQ3 nothing to do for ORPO and ASFT, and the other way round.

The gain from tempering = best quality at β < 1 minus best quality at β = 1. Its 95%
interval adds the two intervals' half-widths in quadrature, sqrt(h₁² + h₂²), treating the
two estimates as independent (they are judged on the same prompts, so if anything
positively correlated, and the interval is then conservative).

Writes rq2.md, tempering_gain.csv and beta_sensitivity.{png,html} (quality vs β, best lr
per β, paper Figure 1 form).
"""

from __future__ import annotations

import dataclasses
import math

from raydaa.report import tables
from raydaa.report.analysis import analyse
from raydaa.report.plots import beta_sensitivity_chart
from raydaa.report.select import Row, best_row
from raydaa.study.runner import MAIN, StudyError, Sweep, write_chart

METHODS = ("orpo", "asft")
GAIN_KEYS = ["method", "lr_at_beta1", "quality_beta1", "quality_beta1_low",
             "quality_beta1_high", "kl_beta1", "best_beta", "lr_at_best_beta", "quality_best",
             "quality_best_low", "quality_best_high", "kl_best", "gain", "gain_low", "gain_high",
             "trials"]  # fmt: skip


def _is_one(beta: float) -> bool:
    return math.isclose(beta, 1.0, rel_tol=1e-9)


def plan(study, methods=METHODS) -> list[Sweep]:
    beta1, others = Sweep("rq2/beta1", MAIN), Sweep("rq2/beta-sweep", MAIN)
    for method in methods:
        space = study.space(method)
        if not any(_is_one(b) for b in space.betas):
            raise StudyError(
                f"{space.source}: RQ2 compares with the untempered method, so {method}'s β grid "
                f"must hold 1.0; it is {space.betas}"
            )
        beta1.parts[method] = dataclasses.replace(space, betas=[1.0]).grid()
        rest = [b for b in space.betas if not _is_one(b)]
        others.parts[method] = dataclasses.replace(space, betas=rest).grid() if rest else []
    return [beta1, others]


def half_width(row: Row) -> float:
    """Half the 95% interval's width (NaN without an interval)."""
    low, high = row.get("quality_low"), row.get("quality_high")
    if low is None or high is None:
        return math.nan
    return (high - low) / 2


def tempering_gain(method: str, rows: list[Row]) -> dict:
    """The best untempered (β = 1) and best tempered (β < 1) trial of `rows` (one method's
    two-stage grid) and the gain between them, with its interval."""
    base = best_row([r for r in rows if _is_one(r["beta"])]) or {}
    tempered = best_row([r for r in rows if r["beta"] < 1 and not _is_one(r["beta"])]) or {}
    record = {
        "method": method,
        "lr_at_beta1": base.get("lr"),
        "quality_beta1": base.get("quality"),
        "quality_beta1_low": base.get("quality_low"),
        "quality_beta1_high": base.get("quality_high"),
        "kl_beta1": base.get("kl"),
        "best_beta": tempered.get("beta"),
        "lr_at_best_beta": tempered.get("lr"),
        "quality_best": tempered.get("quality"),
        "quality_best_low": tempered.get("quality_low"),
        "quality_best_high": tempered.get("quality_high"),
        "kl_best": tempered.get("kl"),
        "trials": len(rows),
        "gain": None,
        "gain_low": None,
        "gain_high": None,
    }
    if base and tempered:
        gain = tempered["quality"] - base["quality"]
        half = math.hypot(half_width(tempered), half_width(base))
        record |= {"gain": gain, "gain_low": gain - half, "gain_high": gain + half}
    return record


def gain_markdown(records: list[dict]) -> str:
    rows = []
    for r in records:
        gain = tables.interval(r["gain"], r["gain_low"], r["gain_high"])
        if not tables._missing(r["gain_low"]) and (r["gain_low"] > 0 or r["gain_high"] < 0):
            gain += " (interval excludes 0)"
        rows.append(
            [
                r["method"],
                tables.hp(r["lr_at_beta1"]),
                tables.interval(
                    r["quality_beta1"], r["quality_beta1_low"], r["quality_beta1_high"]
                ),
                tables.hp(r["best_beta"]),
                tables.hp(r["lr_at_best_beta"]),
                tables.interval(r["quality_best"], r["quality_best_low"], r["quality_best_high"]),
                gain,
            ]
        )
    headers = ["method", "best lr at β = 1", "quality at β = 1", "best β < 1", "its lr",
               "quality at best β < 1", "gain from tempering [95% CI]"]  # fmt: skip
    return tables.markdown(headers, rows)


def run(study, methods=METHODS) -> list[str]:
    done = study.execute("rq2", plan(study, methods))
    if study.dry_run:
        return []
    rows = {m: done["rq2/beta1"][m] + done["rq2/beta-sweep"][m] for m in methods}
    gains = [tempering_gain(m, rows[m]) for m in methods]
    sink = study.output("rq2")
    name = study.scenario.name
    chart = beta_sensitivity_chart(analyse([r for m in methods for r in rows[m]]), name)
    written = [sink.write("tempering_gain.csv", tables.to_csv((GAIN_KEYS, gains)))]
    written += write_chart(sink, chart)
    page = [
        f"# RQ2: does tempering help ORPO and ASFT? (paper Figure 1), scenario `{name}`",
        "",
        "Two-stage ORPO and ASFT (alignment term alone, from the SFT model). Baseline: the "
        "best learning rate at β = 1 (the untempered methods); tempered: the best (β < 1, lr) "
        "of the grid. Gain = tempered minus baseline quality; its 95% interval adds the two "
        "half-widths in quadrature (independent estimates).",
        "",
        gain_markdown(gains),
        "CSV: [tempering_gain.csv](tempering_gain.csv).",
        "",
        "![beta_sensitivity](beta_sensitivity.png)",
        "",
        "Quality against β, best lr per β, 95% band. Interactive: "
        "[beta_sensitivity.html](beta_sensitivity.html). Every trial: "
        f"`raydaa report --scenario {name}`.",
    ]
    written.append(sink.write("rq2.md", "\n".join(page) + "\n"))
    return written
