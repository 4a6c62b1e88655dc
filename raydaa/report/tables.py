"""The report's tables, as Markdown (formatted) and CSV (full precision).

summary        paper Table 2 form: each method's best quality with its 95% interval,
               KL at that config, and the finished / failed / diverged / pruned counts (CSV also:
               its front's hypervolume and the reference point it is measured from)
hypervolume    each method's front hypervolume (Markdown only; in summary.csv)
best_configs   paper Table 7 form: each method's best β, lr (λ and γ/β where used)
fronts         the best-lr-per-β points behind the plots, with their front flags
correlations   Spearman ρ of KL against β (all points, and within each lr)
failures       every failed or diverged trial with its reason
pruned         every trial a Tune scheduler stopped early: its step, its last intermediate
               quality and KL (on the evaluation subset), the reason
comparisons    paired differences of the variants' best configs, and pairwise vs pointwise
matched_kl     the same pairs at KL budgets
collapsed      configurations of one variant that trained the same model
seed_spread    quality across the seeds of each configuration (Markdown only)
"""

from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Any

from raydaa.config.search_space import search_rows
from raydaa.report.analysis import Analysis, PairedAnalysis
from raydaa.report.select import usable

if TYPE_CHECKING:
    from raydaa.report.comparisons import Comparison

Table = tuple[list[str], list[dict[str, Any]]]
"""(column keys, records): a CSV writes the raw values, Markdown the formatted ones."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: Any, digits: int = 3) -> str:
    return "—" if _missing(value) else f"{value:.{digits}f}"


def hp(value: Any) -> str:
    """A hyperparameter as written in a grid: 1e-05, 0.0003, 1."""
    return "—" if _missing(value) else f"{value:g}"


def interval(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    if _missing(value):
        return "—"
    if _missing(low) or _missing(high):
        return num(value, digits)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def to_csv(table: Table) -> str:
    keys, records = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for record in records:
        writer.writerow(["" if _missing(record.get(k)) else record.get(k) for k in keys])
    return buffer.getvalue()


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_METRICS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high")
_COUNTS = ("finished", "failed", "diverged", "pruned", "total")
_HYPERVOLUME = ("front_hypervolume", "hv_ref_quality", "hv_ref_kl")


def summary_table(analysis: Analysis) -> Table:
    keys = ["method", "kind", *_METRICS, *_COUNTS, "trial_id", *_HYPERVOLUME]
    q_ref, kl_ref = analysis.hv_reference
    records = []
    for v in analysis.variants:
        best = v.best or {}
        records.append(
            {"method": v.name, "kind": v.kind}
            | {k: best.get(k) for k in (*_METRICS, "trial_id")}
            | v.counts
            | {"front_hypervolume": v.hypervolume, "hv_ref_quality": q_ref, "hv_ref_kl": kl_ref}
        )
    return keys, records


def summary_markdown(analysis: Analysis) -> str:
    """Bold: the best quality; underlined: the second best (as the paper's Table 2)."""
    ranked = analysis.ranked_best()
    rows = []
    for record in summary_table(analysis)[1]:
        quality = interval(record["quality"], record["quality_low"], record["quality_high"])
        if not _missing(record["quality"]) and ranked and record["quality"] == ranked[0]:
            quality = f"**{quality}**"
        elif not _missing(record["quality"]) and len(ranked) > 1 and record["quality"] == ranked[1]:
            quality = f"<u>{quality}</u>"
        rows.append(
            [
                record["method"],
                record["kind"],
                quality,
                interval(record["kl"], record["kl_low"], record["kl_high"]),
                *(str(record[k]) for k in _COUNTS),
            ]
        )
    headers = ["method", "kind", "best quality [95% CI]", "KL at best [95% CI]", *_COUNTS]
    return markdown(headers, rows)


def hypervolume_markdown(analysis: Analysis) -> str:
    """One row per method: its front hypervolume (reference point stated by the caller)."""
    rows = [[v.name, str(sum(1 for r in search_rows(v.rows) if usable(r))), num(v.hypervolume, 4)]
            for v in analysis.variants]  # fmt: skip
    return markdown(["method", "finished configurations", "front hypervolume"], rows)


_HPARAMS = ("beta", "lr", "lambda_", "gamma_beta_ratio", "sft_weight", "epochs", "normalization")


def best_configs_table(analysis: Analysis) -> Table:
    keys = ["method", "kind", *_HPARAMS, *_METRICS, "trial_id"]
    records = [
        {"method": v.name, "kind": v.kind} | {k: v.best.get(k) for k in keys[2:]}
        for v in analysis.variants
        if v.best is not None
    ]
    return keys, records


def _lambda_used(record: dict[str, Any]) -> bool:
    """λ matters when the SFT term is in the loss, or a sweep set it away from 1."""
    sft, lam = record.get("sft_weight"), record.get("lambda_")
    return (not _missing(sft) and sft > 0) or (not _missing(lam) and lam != 1.0)


def best_configs_markdown(analysis: Analysis) -> str:
    rows = []
    for r in best_configs_table(analysis)[1]:
        rows.append(
            [
                r["method"],
                hp(r["beta"]),
                hp(r["lr"]),
                hp(r["lambda_"]) if _lambda_used(r) else "—",
                hp(r["gamma_beta_ratio"]) if r["method"].startswith("simpo") else "—",
                interval(r["quality"], r["quality_low"], r["quality_high"]),
                interval(r["kl"], r["kl_low"], r["kl_high"]),
                str(r["trial_id"]),
            ]
        )
    headers = [
        "method",
        "β",
        "learning rate",
        "λ",
        "γ/β",
        "quality [95% CI]",
        "KL [95% CI]",
        "trial",
    ]
    return markdown(headers, rows)


def fronts_table(analysis: Analysis) -> Table:
    keys = ["method", "kind", "beta", "lr", "lambda_", *_METRICS, "on_method_front",
            "on_kind_front", "trial_id"]  # fmt: skip
    records = [
        {"method": v.name, "kind": v.kind}
        | {k: p.get(k) for k in ("beta", "lr", "lambda_", *_METRICS, "trial_id")}
        | {"on_method_front": v.on_front[i], "on_kind_front": v.on_kind_front[i]}
        for v in analysis.variants
        for i, p in enumerate(v.points)
    ]
    return keys, records


def fronts_markdown(analysis: Analysis) -> str:
    rows = [
        [
            r["method"],
            hp(r["beta"]),
            hp(r["lr"]),
            interval(r["quality"], r["quality_low"], r["quality_high"]),
            interval(r["kl"], r["kl_low"], r["kl_high"]),
            "yes" if r["on_kind_front"] else "",
        ]  # fmt: skip
        for r in fronts_table(analysis)[1]
        if r["on_method_front"]
    ]
    headers = ["method", "β", "lr", "quality [95% CI]", "KL [95% CI]", "on pooled kind front"]
    return markdown(headers, rows)


def correlations_table(analysis: Analysis) -> Table:
    keys = ["method", "kind", "lr", "n", "spearman_rho"]
    records = []
    for v in analysis.variants:
        c = v.correlation
        records.append(
            {
                "method": v.name,
                "kind": v.kind,
                "lr": "best per beta",
                "n": c.n,
                "spearman_rho": c.rho,
            }
        )
        records += [
            {"method": v.name, "kind": v.kind, "lr": lr, "n": n, "spearman_rho": rho}
            for lr, (rho, n) in c.per_lr.items()
        ]
    return keys, records


def _rho(rho: float, n: int) -> str:
    return f"n/a (n={n})" if math.isnan(rho) else f"{rho:+.2f} (n={n})"


def correlations_markdown(analysis: Analysis) -> str:
    rows = [
        [
            v.name,
            _rho(v.correlation.rho, v.correlation.n),
            "; ".join(f"{hp(lr)}: {_rho(rho, n)}" for lr, (rho, n) in v.correlation.per_lr.items())
            or "—",
        ]
        for v in analysis.variants
    ]
    return markdown(["method", "ρ(β, KL), best lr per β", "ρ(β, KL) within each lr"], rows)


def failures_table(analysis: Analysis) -> Table:
    """Failed and diverged trials, and finished ones without a finite quality (pruned
    ones: `pruned_table`)."""
    keys = ["method", "trial_id", "status", "beta", "lr", "lambda_", "diverged_step", "error"]
    records = [
        {"method": v.name} | {k: r.get(k) for k in keys[1:]}
        for v in analysis.variants
        for r in sorted(v.rows, key=lambda r: str(r["trial_id"]))
        if not usable(r) and r["status"] != "pruned"
    ]
    return keys, records


def _no_reason(record: dict[str, Any]) -> str:
    return (
        "finished without a finite quality"
        if record["status"] == "finished"
        else "no reason recorded"
    )


def failures_markdown(analysis: Analysis, max_error: int = 160) -> str:
    def short(text: Any) -> str:
        text = "" if _missing(text) else str(text).strip().replace("\n", " ")
        return text if len(text) <= max_error else text[: max_error - 1] + "…"

    rows = [
        [
            r["method"],
            str(r["trial_id"]),
            r["status"],
            hp(r["beta"]),
            hp(r["lr"]),
            hp(r["diverged_step"]),
            short(r["error"]) or _no_reason(r),
        ]  # fmt: skip
        for r in failures_table(analysis)[1]
    ]
    return markdown(["method", "trial", "status", "β", "lr", "diverged at step", "reason"], rows)


def pruned_table(analysis: Analysis) -> Table:
    """Trials a Tune scheduler stopped early, with the intermediate evaluation they were
    stopped on (quality and KL on `eval_prompts` prompts at step `eval_step`)."""
    keys = ["method", "trial_id", "beta", "lr", "lambda_", "eval_step", "eval_prompts",
            "quality", "quality_low", "quality_high", "kl", "error"]
    records = [
        {"method": v.name} | {k: r.get(k) for k in keys[1:]}
        for v in analysis.variants
        for r in sorted(v.rows, key=lambda r: str(r["trial_id"]))
        if r["status"] == "pruned"
    ]
    return keys, records


def pruned_markdown(analysis: Analysis) -> str:
    rows = [
        [
            r["method"],
            str(r["trial_id"]),
            hp(r["beta"]),
            hp(r["lr"]),
            hp(r["eval_step"]),
            hp(r["eval_prompts"]),
            interval(r["quality"], r["quality_low"], r["quality_high"]),
            num(r["kl"]),
            "" if _missing(r["error"]) else str(r["error"]),
        ]  # fmt: skip
        for r in pruned_table(analysis)[1]
    ]
    headers = ["method", "trial", "β", "lr", "stopped at step", "prompts",
               "last quality [95% CI]", "last KL", "reason"]
    return markdown(headers, rows)


# ---------------------------------------------------------------------------------------
# Is the difference real? (raydaa.report.comparisons)
# ---------------------------------------------------------------------------------------

_PAIRED = ("difference", "low", "high", "p_value", "mde", "sd", "se", "n", "a_mean", "b_mean",
           "test")  # fmt: skip
_COMPARISON_KEYS = ["family", "a", "b", "budget", "a_config", "b_config", "a_trials",
                    "b_trials", "a_quality", "b_quality", "difference", "low", "high",
                    "p_value", "p_holm", "verdict", "mde", "sd", "se", "n", "seeds_a",
                    "seeds_b", "test", "reason", "note"]  # fmt: skip


def _comparison_record(c: Comparison) -> dict[str, Any]:
    r = c.result
    record = {k: getattr(r, k) if r else None for k in _PAIRED}
    record["a_quality"], record["b_quality"] = record.pop("a_mean"), record.pop("b_mean")
    return record | {
        "family": c.family, "a": c.a, "b": c.b, "budget": c.budget, "a_config": c.a_config,
        "b_config": c.b_config, "a_trials": ";".join(c.a_trials), "b_trials": ";".join(c.b_trials),
        "p_holm": c.p_holm, "verdict": c.verdict, "seeds_a": r.seeds[0] if r else None,
        "seeds_b": r.seeds[1] if r else None, "reason": c.reason, "note": c.note,
    }  # fmt: skip


def comparisons_table(paired: PairedAnalysis) -> Table:
    """Best vs best for every pair, then pooled pairwise vs pointwise (each its own Holm
    family, named in `family`)."""
    return _COMPARISON_KEYS, [_comparison_record(c) for c in paired.pairs + paired.kinds]


def matched_kl_table(paired: PairedAnalysis) -> Table:
    return _COMPARISON_KEYS, [_comparison_record(c) for c in paired.matched]


def _side(name: str, config: str, trials: tuple[str, ...]) -> str:
    seeds = f"; {len(trials)} seeds" if len(trials) > 1 else ""
    return f"{name} ({config}{seeds})" if config else name


def _verdict(c: Comparison) -> str:
    if c.result is None:
        return f"skipped: {c.reason}"
    named = {"A better": f"**{c.a} better**", "B better": f"**{c.b} better**"}
    return named.get(c.verdict, c.verdict)


def comparisons_markdown(comparisons: list[Comparison], budget: bool = False) -> str:
    """One row per comparison: A − B with its interval, raw and Holm p, verdict, MDE."""
    rows = []
    for c in comparisons:
        r = c.result
        rows.append(
            ([hp(c.budget)] if budget else [])
            + [
                _side(c.a, c.a_config, c.a_trials),
                _side(c.b, c.b_config, c.b_trials),
                f"{num(r.a_mean)} vs {num(r.b_mean)}" if r else "—",
                f"{r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" if r else "—",
                f"{r.p_value:.3g} ({c.p_holm:.3g})" if r else "—",
                _verdict(c),
                num(r.mde) if r else "—",
                str(r.n) if r else "—",
            ]
        )
    headers = ["A", "B", "quality A vs B", "A − B [95% CI]", "p (Holm)", "verdict", "MDE",
               "prompts"]  # fmt: skip
    return markdown((["KL ≤"] if budget else []) + headers, rows)


def seed_spread_markdown(paired: PairedAnalysis) -> str:
    rows = [
        [s.variant, s.config, ", ".join("—" if x is None else str(x) for x in s.seeds),
         num(s.mean), num(s.sd), num(s.min), num(s.max)]
        for s in paired.spread
    ]  # fmt: skip
    return markdown(["method", "configuration", "seeds", "mean", "sd", "min", "max"], rows)


def collapsed_table(paired: PairedAnalysis) -> Table:
    keys = ["method", "beta_min", "beta_max", "betas", "lrs", "trials", "quality", "kl",
            "evidence"]  # fmt: skip
    records = [
        {"method": g.variant, "beta_min": min(g.betas, default=None),
         "beta_max": max(g.betas, default=None), "betas": ";".join(f"{b:g}" for b in g.betas),
         "lrs": ";".join(f"{lr:g}" for lr in g.lrs), "trials": ";".join(g.trials),
         "quality": g.quality, "kl": g.kl, "evidence": g.evidence}
        for g in paired.collapsed
    ]  # fmt: skip
    return keys, records


def collapsed_markdown(paired: PairedAnalysis) -> str:
    rows = [
        [r["method"], f"{hp(r['beta_min'])} – {hp(r['beta_max'])}",
         r["lrs"].replace(";", ", ") or "—", r["trials"].replace(";", ", "), num(r["quality"]),
         num(r["kl"]), r["evidence"]]
        for r in collapsed_table(paired)[1]
    ]  # fmt: skip
    headers = ["method", "β range", "lr", "trials (one model)", "quality", "KL", "evidence"]
    return markdown(headers, rows)
