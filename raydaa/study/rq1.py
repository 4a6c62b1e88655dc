"""RQ1 (paper §4.1, §5.1, Table 1): does an explicit SFT stage help ORPO and ASFT?

Per method (ORPO, ASFT), the single-stage setups of raydaa/search_spaces/single_stage/:

    base_init            the original single-stage method from the base model:
                         SFT term + λ·alignment term, λ x lr x 1-2 epochs
    sft_init_align_only  the alignment term alone (β = 1) from the SFT model
    sft_init             the single-stage loss (SFT term kept) from the SFT model (Table 1 †)

base_init runs in the `<scenario>@base` namespace (reference = the base model), the SFT
setups in `<scenario>@sft100pct` (the SFT model trained on all the SFT data; the
scenario's own checkpoint when it is one). Both judge against the same answers, so the
rows compare; the table opens with the SFT model itself, unaligned (Table 1's first row),
and ends with two-stage DPO from the same SFT model at RQ3's best β and lr (Table 1's last
row) once RQ3's DPO grid is complete; that trial is RQ4's 100% DPO trial too, so it runs once.

Writes rq1.md, table1.csv (best configuration per row, paper Table 1 form) and
lambda_epochs.csv (base init: best quality over lr per λ and epochs, the paper's remark
that λ = 1 after two epochs is best).
"""

from __future__ import annotations

from raydaa.report import tables
from raydaa.report.select import Row, best_row, status_counts, usable
from raydaa.study import rq3
from raydaa.study.runner import BASE, StudyError, Sweep, config_of, sft_namespace

METHODS = ("orpo", "asft")
SETUPS = ("sft_init_align_only", "base_init", "sft_init")
"""Table 1's order after the SFT row: SFT-init alignment alone, base init, SFT-init †."""
SFT_FULL = sft_namespace(1.0)
NAMESPACES = {"base_init": BASE, "sft_init_align_only": SFT_FULL, "sft_init": SFT_FULL}
LABELS = {
    "sft_init_align_only": ("SFT", "{M}", "alignment term alone (β = 1)"),
    "base_init": ("Base", "{M}", "single stage: SFT term + λ·alignment"),
    "sft_init": ("SFT", "{M}†", "SFT term kept: SFT term + λ·alignment"),
}
DPO_PART = "dpo/rq3_best"
DPO_LABEL = ("SFT", "DPO", "two stage, RQ3's best β and lr")
TABLE_KEYS = ["init", "method", "setup", "quality", "quality_low", "quality_high", "kl",
              "kl_low", "kl_high", "lr", "lambda_", "epochs", "beta", "sft_weight",
              "finished", "total", "trial_id"]  # fmt: skip


def plan(study, methods=METHODS) -> list[Sweep]:
    base = Sweep("rq1/base-init", BASE)
    sft = Sweep("rq1/sft-init", SFT_FULL)
    for method in methods:
        for setup in SETUPS:
            space = study.space(method, setup)
            ns = NAMESPACES[setup]
            if space.init != ns.init:
                raise StudyError(
                    f"{space.source}: setups.{setup}.init is {space.init!r}; RQ1 runs it from "
                    f"{ns.describe()} (init {ns.init!r})"
                )
            (base if ns is BASE else sft).parts[f"{method}/{setup}"] = space.grid()
    dpo = rq3_best_dpo(study)
    if dpo is not None:
        sft.parts[DPO_PART] = [config_of(dpo)]
    return [base, sft]


def rq3_best_dpo(study):
    """RQ3's best DPO row (the scenario's store), or None with a line saying why the
    DPO row is left out: RQ1 does not run RQ3's grid itself."""
    try:
        return rq3.best_configs(study, ["dpo"], "RQ1's DPO row uses")["dpo"]
    except StudyError as missing:
        study.log(f"  RQ1's DPO row (Table 1's last) left out: {missing}")
        return None


def table1(parts: dict[str, list[Row]], sft_model: dict | None, methods=METHODS):
    """(keys, records) of Table 1: the unaligned SFT model, then per setup and method the
    best finished trial (highest quality; ties: lower KL, then trial id) with its counts.
    `parts`: "<method>/<setup>" -> that setup's rows."""
    records = [
        {"init": "Base", "method": "SFT", "setup": "the SFT model itself, no alignment"}
        | (sft_model or {})
        | {"finished": None, "total": None}
    ]
    for setup in SETUPS:
        init, name, text = LABELS[setup]
        for method in methods:
            label = (init, name.format(M=method.upper()), text)
            records.append(best_record(label, parts.get(f"{method}/{setup}", [])))
    if DPO_PART in parts:
        records.append(best_record(DPO_LABEL, parts[DPO_PART]))
    return TABLE_KEYS, records


def best_record(label: tuple[str, str, str], rows: list[Row]) -> dict:
    """One Table 1 row: (init, method, setup), the best finished trial and the counts."""
    best, counts = best_row(rows) or {}, status_counts(rows)
    return (
        dict(zip(("init", "method", "setup"), label, strict=True))
        | {k: best.get(k) for k in TABLE_KEYS[3:-3]}
        | {"finished": counts["finished"], "total": counts["total"]}
        | {"trial_id": best.get("trial_id")}
    )


def lambda_epochs(parts: dict[str, list[Row]], methods=METHODS):
    """(keys, records): base init, best quality over lr for each (method, λ, epochs)."""
    keys = ["method", "lambda_", "epochs", "quality", "quality_low", "quality_high", "lr",
            "trial_id"]  # fmt: skip
    records = []
    for method in methods:
        rows = [r for r in parts.get(f"{method}/base_init", []) if usable(r)]
        for lam, epochs in sorted({(r["lambda_"], r["epochs"]) for r in rows}):
            best = best_row([r for r in rows if (r["lambda_"], r["epochs"]) == (lam, epochs)])
            records.append(
                {"method": method, "lambda_": lam, "epochs": epochs}
                | {k: best.get(k) for k in keys[3:]}
            )
    return keys, records


def table1_markdown(table) -> str:
    """Bold: the best quality among the aligned rows (as the paper's Table 1)."""
    _, records = table
    aligned = [r["quality"] for r in records[1:] if not tables._missing(r.get("quality"))]
    top = max(aligned) if aligned else None
    rows = []
    for r in records:
        quality = tables.interval(r.get("quality"), r.get("quality_low"), r.get("quality_high"))
        if top is not None and r is not records[0] and r.get("quality") == top:
            quality = f"**{quality}**"
        rows.append(
            [
                r["init"],
                r["method"],
                r["setup"],
                quality,
                tables.interval(r.get("kl"), r.get("kl_low"), r.get("kl_high")),
                tables.hp(r.get("lr")),
                tables.hp(r.get("lambda_")) if (r.get("sft_weight") or 0) > 0 else "—",
                tables.hp(r.get("epochs")),
                "—" if r["total"] is None else f"{r['finished']}/{r['total']}",
            ]
        )
    headers = ["init", "method", "setup", "quality [95% CI]", "KL [95% CI]", "lr", "λ",
               "epochs", "finished/trials"]  # fmt: skip
    return tables.markdown(headers, rows)


def run(study, methods=METHODS) -> list[str]:
    sweeps = plan(study, methods)
    done = study.execute("rq1", sweeps)
    sft_model = study.reference_quality(SFT_FULL)
    if study.dry_run:
        return []
    parts = {**done["rq1/base-init"], **done["rq1/sft-init"]}
    table = table1(parts, sft_model, methods)
    grid = lambda_epochs(parts, methods)
    sink = study.output("rq1")
    written = [
        sink.write("table1.csv", tables.to_csv(table)),
        sink.write("lambda_epochs.csv", tables.to_csv(grid)),
    ]
    name = study.scenario.name
    judge = study.scenario_for(SFT_FULL).judge
    page = [
        f"# RQ1: base vs SFT-initialized ORPO and ASFT (paper Table 1), scenario `{name}`",
        "",
        "Best configuration per row (highest quality over the setup's grid; ties: lower KL). "
        f"Base init trials start from the base model (`{name}@base`), SFT init trials from "
        f"the SFT model trained on all the SFT data (`{name}@sft100pct`). Quality: the "
        f"judge's score against the `{judge.baseline if judge else '?'}` baseline, the same "
        "answers for every row; brackets: 95% intervals. KL is from each row's own "
        "reference. †: the SFT term kept in the loss.",
        "",
        table1_markdown(table),
        "CSV: [table1.csv](table1.csv).",
        "",
        "## Base init: best quality over lr per λ and epochs",
        "",
        tables.markdown(
            ["method", "λ", "epochs", "quality [95% CI]", "lr"],
            [
                [
                    r["method"],
                    tables.hp(r["lambda_"]),
                    str(r["epochs"]),
                    tables.interval(r["quality"], r["quality_low"], r["quality_high"]),
                    tables.hp(r["lr"]),
                ]  # fmt: skip
                for r in grid[1]
            ],
        ),
        "CSV: [lambda_epochs.csv](lambda_epochs.csv). Every trial: `raydaa report --scenario "
        f"{name}@base` and `--scenario {name}@sft100pct`.",
    ]
    written.append(sink.write("rq1.md", "\n".join(page) + "\n"))
    return written
