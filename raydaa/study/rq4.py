"""RQ4 (paper §4.3, §5.4, Figure 5): how much SFT data does alignment need?

SFT models trained on 1, 3, 5, 10, 25, 50 and 100% of the scenario's SFT data (a seeded,
nested share: `raydaa sft --fraction F`), and the base model itself, each in its own
namespace `<scenario>@sft<P>pct` / `<scenario>@base` (one reference per namespace). Each
is aligned with every method's best two-stage configuration from RQ3, read from the
scenario's own store: RQ3 must be complete for the method (else a StudyError says what to
run). The 100% namespace reuses the scenario's SFT checkpoint when it is one.

Every namespace judges against the same answers (runner.namespace_scenario), so the
qualities compare across SFT fractions; the reference models themselves, unaligned, are
judged too ("SFT only").

Writes rq4.md, sft_fraction.csv (one row per method and initialization), best_configs.csv
(the RQ3 configurations used) and quality_vs_sft_fraction_{pairwise,pointwise}.{png,html}
(the paper's Figure 5 (a) and (b)).
"""

from __future__ import annotations

import math

from raydaa.core.methods import METHOD_SPECS, METHODS
from raydaa.report import tables
from raydaa.report.plots import Chart, Series, _method_color
from raydaa.report.select import KINDS, Row, best_row
from raydaa.study import rq3
from raydaa.study.runner import (
    BASE,
    Namespace,
    StudyError,
    Sweep,
    config_of,
    sft_namespace,
    write_chart,
)

FRACTIONS = (0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)
"""The paper's seven SFT checkpoints (§4.3)."""
SFT_ONLY = "sft only"
"""The row / line of the reference models themselves, unaligned."""
METRICS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high")


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def initializations(fractions=FRACTIONS, base: bool = True) -> list[Namespace]:
    """The base model (the paper's eighth initialization), then the SFT fractions."""
    return ([BASE] if base else []) + [sft_namespace(f) for f in sorted(fractions)]


def init_label(ns: Namespace) -> str:
    return "base" if ns.init == "base" else f"{ns.fraction * 100:g}%"


def plan(study, methods, inits: list[Namespace]) -> tuple[list[Sweep], dict[str, Row]]:
    best = rq3.best_configs(study, methods, "RQ4 aligns every SFT model with")
    sweeps = [
        Sweep(f"rq4/{ns.label}", ns, {m: [config_of(best[m])] for m in methods}) for ns in inits
    ]
    return sweeps, best


def fraction_table(inits: list[Namespace], methods, parts: dict, sft_only: dict):
    """(keys, records): per method (then "sft only") and initialization, the trial of the
    best configuration (its best row if it ran more than once). `parts`: namespace label ->
    method -> rows; `sft_only`: label -> the reference's own metrics (or None)."""
    keys = ["method", "init", "sft_fraction", *METRICS, "status", "trial_id"]
    records = []
    for method in (*methods, SFT_ONLY):
        for ns in inits:
            record = {"method": method, "init": init_label(ns), "sft_fraction": ns.fraction}
            if method == SFT_ONLY:
                metrics = sft_only.get(ns.label)
                record |= {k: (metrics or {}).get(k) for k in METRICS}
                record |= {"status": "reference" if metrics else "missing", "trial_id": None}
            else:
                rows = parts.get(ns.label, {}).get(method, [])
                row = best_row(rows) or (rows[-1] if rows else {})
                record |= {k: row.get(k) for k in (*METRICS, "trial_id")}
                record["status"] = row.get("status", "missing")
            records.append(record)
    return keys, records


def fraction_markdown(table, inits: list[Namespace]) -> str:
    _, records = table
    labels = [init_label(ns) for ns in inits]
    by_method: dict[str, dict[str, str]] = {}
    for r in records:
        cell = tables.interval(r["quality"], r["quality_low"], r["quality_high"])
        if r["status"] not in ("finished", "reference"):
            cell = r["status"]
        by_method.setdefault(r["method"], {})[r["init"]] = cell
    rows = [[method, *(cells[label] for label in labels)] for method, cells in by_method.items()]
    return tables.markdown(["method", *labels], rows)


def fraction_charts(table, inits: list[Namespace], methods, scenario: str) -> list[Chart]:
    """Quality vs initialization, one chart per kind (the paper's Figure 5 (a), (b)); the
    x axis is categorical: base, 1%, ..., 100%."""
    _, records = table
    position = {init_label(ns): float(i) for i, ns in enumerate(inits)}
    xticks = [(x, label) for label, x in position.items()]

    def series(name: str, color: str, dashed: bool) -> Series | None:
        mine = [
            r
            for r in records
            if r["method"] == name
            and r["status"] in ("finished", "reference")
            and _finite(r["quality"])
        ]
        if not mine:
            return None
        return Series(
            label=name,
            color=color,
            x=[position[r["init"]] for r in mine],
            y=[r["quality"] for r in mine],
            y_low=[r["quality_low"] for r in mine],
            y_high=[r["quality_high"] for r in mine],
            hover=[
                f"{name}, {r['init']}: quality "
                f"{tables.interval(r['quality'], r['quality_low'], r['quality_high'])}, "
                f"KL {tables.num(r['kl'])}"
                for r in mine
            ],
            dashed=dashed,
            band=True,
        )

    charts = []
    for kind in KINDS:
        members = [m for m in methods if METHOD_SPECS[m].preference_kind == kind]
        if not members:
            continue
        lines = [series(m, _method_color(m), False) for m in members]
        lines.append(series(SFT_ONLY, "#000000", True))
        charts.append(
            Chart(
                f"quality_vs_sft_fraction_{kind}",
                f"{scenario}: {kind} methods, quality vs SFT data (best RQ3 config)",
                "initialization: share of the SFT data",
                "quality",
                [s for s in lines if s is not None],
                xticks=xticks,
            )
        )
    return charts


def run(study, methods=METHODS, inits: list[Namespace] | None = None) -> list[str]:
    inits = initializations() if inits is None else inits
    try:
        sweeps, best = plan(study, methods, inits)
    except StudyError as err:
        if not study.dry_run:
            raise
        study.log(f"[rq4] {err}")
        study.log(f"[rq4] then: {len(methods) * len(inits)} trials, one per method and init")
        for ns in inits:
            study.note_reference(ns)
        study.planned_trials += len(methods) * len(inits)
        return []
    done = study.execute("rq4", sweeps)
    sft_only = {ns.label: study.reference_quality(ns) for ns in inits}
    if study.dry_run:
        return []
    parts = {ns.label: done[f"rq4/{ns.label}"] for ns in inits}
    table = fraction_table(inits, methods, parts, sft_only)
    name = study.scenario.name
    sink = study.output("rq4")
    best_keys = ["method", "beta", "lr", "lambda_", "gamma_beta_ratio", "epochs",
                 "normalization", "quality", "quality_low", "quality_high", "trial_id"]  # fmt: skip
    written = [
        sink.write("sft_fraction.csv", tables.to_csv(table)),
        sink.write(
            "best_configs.csv",
            tables.to_csv((best_keys, [{k: best[m].get(k) for k in best_keys} for m in methods])),
        ),
    ]
    charts = fraction_charts(table, inits, methods, name)
    for chart in charts:
        written += write_chart(sink, chart)
    judge = study.scenario_for(inits[-1]).judge
    page = [
        f"# RQ4: quality vs the amount of SFT data (paper Figure 5), scenario `{name}`",
        "",
        "Each method aligned with its best RQ3 configuration from each initialization: the "
        "base model and SFT models trained on a share of the SFT data (namespaces "
        f"`{name}@base`, `{name}@sft<P>pct`). Quality against the "
        f"`{judge.baseline if judge else '?'}` baseline, the same answers for every "
        "initialization; brackets: 95% intervals. `sft only`: the initialization itself, "
        "unaligned.",
        "",
        fraction_markdown(table, inits),
        "CSV: [sft_fraction.csv](sft_fraction.csv); the configurations: "
        "[best_configs.csv](best_configs.csv).",
        "",
    ]
    for chart in charts:
        page += [f"![{chart.name}]({chart.name}.png)", "",
                 f"Interactive: [{chart.name}.html]({chart.name}.html)", ""]  # fmt: skip
    written.append(sink.write("rq4.md", "\n".join(page)))
    return written
