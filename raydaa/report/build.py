"""`raydaa report`: the results store of one scenario -> tables, fronts, plots.

Writes into `<results>/<scenario>/report/` (or --out; a directory or an s3:// / gs:// prefix),
every file atomically:

    report.md                  the tables below, the figures, the rank correlations
    summary.csv                paper Table 2 form: best quality per method + trial counts
    best_configs.csv           paper Table 7 form: best β, lr, λ, γ/β per method
    fronts.csv                 best-lr-per-β points with their front flags
    correlations.csv           Spearman ρ of KL against β
    failures.csv               failed / diverged trials with their reasons
    pruned.csv                 trials a Tune scheduler stopped early, with their last
                               intermediate evaluation
    comparisons.csv            paired differences of the best configs, pairwise vs pointwise
    matched_kl.csv             the same pairs at matched KL budgets
    collapsed.csv              β ranges of one method that trained the same model
    pareto_methods.{png,html}  quality vs KL fronts per method
    pareto_kinds.{png,html}    pooled pairwise vs pointwise fronts (paper Figures 3, 6)
    beta_sensitivity.{png,html} quality vs β (paper Figure 1)
    plotly.min.js              the HTML pages' plotly.js (with --plotly-js directory)
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from raydaa.io import storage
from raydaa.report import tables
from raydaa.report.analysis import Analysis, PairedAnalysis, analyse, analyse_paired
from raydaa.report.plots import charts, render_html, render_png
from raydaa.report.select import load_rows

if TYPE_CHECKING:
    from raydaa.report.comparisons import Options, RecordsFor

PLOTLY_JS = {"directory": "directory", "inline": True, "cdn": "cdn"}


def default_out(results: str | Path, scenario: str) -> str:
    return storage.join(storage.resolve(results), scenario, "report")


def _trend(rho: float, n: int) -> str:
    if math.isnan(rho):
        return f"not computable (n={n}: needs 3 or more β values with a finite KL, not all equal)"
    if rho < 0:
        return f"ρ = {rho:+.2f} over {n} β values: KL rises as β falls"
    if rho > 0:
        return f"ρ = {rho:+.2f} over {n} β values: KL falls as β falls"
    return f"ρ = 0 over {n} β values: no monotone trend"


def _paired_section(paired: PairedAnalysis) -> list[str]:
    """report.md's "Is the difference real?" section."""
    out = [
        "## Is the difference real? Paired comparisons",
        "",
        "The intervals above are each method's own; two overlapping intervals do not make two "
        "methods equal, nor do disjoint ones prove a difference. Here the methods are compared "
        "on the same prompts: A − B is the difference of their mean verdicts (1 win, 0.5 tie, "
        "0 loss against the baseline) over the prompts judged for both, its 95% interval a "
        "paired bootstrap over prompts (and over seeds, where a configuration was trained "
        "with several), p a two-sided test of no difference, adjusted by Holm-Bonferroni "
        "within each table. A verdict names a winner only when the Holm p is below 0.05; "
        "MDE is the smallest true difference this many prompts detects 80% of the time. "
        "Each best configuration was picked on these same prompts, which favours it (the "
        "winner's curse); seed replicates reduce that. See docs/reports.md.",
        "",
    ]
    if not paired.with_records:
        out += [
            f"No per-prompt records for any of the {paired.finished} finished trials (first "
            f"reason: {paired.missing_records}): the paired comparisons need them, so "
            "comparisons.csv and matched_kl.csv list every pair as skipped, with the reason.",
            "",
        ]
    elif paired.with_records < paired.finished:
        out += [
            f"Per-prompt records found for {paired.with_records} of {paired.finished} finished "
            f"trials (first missing: {paired.missing_records}); a comparison that needs a "
            "missing one is listed as skipped, with the reason.",
            "",
        ]
    if paired.with_records:
        out += [
            "### Best configurations, pair by pair",
            "",
            tables.comparisons_markdown(paired.pairs),
            "CSV (with pairwise vs pointwise): [comparisons.csv](comparisons.csv).",
            "",
            "### At matched KL",
            "",
            "Each method's best configuration among its trials with KL ≤ the budget (budgets: "
            "the quartiles of the finished trials' KL, "
            + (", ".join(f"{b:.4g}" for b in paired.budgets) or "none: no finite KL")
            + "); Holm within each budget. CSV: [matched_kl.csv](matched_kl.csv).",
            "",
            tables.comparisons_markdown(paired.matched, budget=True),
            "### Pairwise vs pointwise (the paper's central claim)",
            "",
            "The best configuration among all two-stage pairwise methods' trials against that "
            "of the pointwise ones, overall (KL ≤ —) and at each budget; one Holm family.",
            "",
            tables.comparisons_markdown(paired.kinds, budget=True),
        ]
    out += ["### Seed spread", ""]
    out += (
        [
            "Quality across the seeds of each configuration trained more than once: how much "
            "of a difference the seed alone makes.",
            "",
            tables.seed_spread_markdown(paired),
        ]
        if paired.spread
        else ["No configuration was trained with more than one seed.", ""]
    )
    out += ["### Collapsed configurations", ""]
    out += (
        [
            "Trials of one method that trained the same model: equal probe log-probs (to "
            "1e-4), or closer than a tenth of what another training seed changes (where the "
            "method has seed replicates), or equal quality and KL without records; small β "
            "at one lr (paper Theorem 3.6, with Adam's invariance to the loss's scale). Each "
            "group is one point, spanning its β range. CSV: [collapsed.csv](collapsed.csv).",
            "",
            tables.collapsed_markdown(paired),
        ]
        if paired.collapsed
        else ["None: no two finished trials of a method trained the same model.", ""]
    )
    return out


def _hypervolume_section(analysis: Analysis) -> list[str]:
    """Each method's front hypervolume, with the reference point it is measured from."""
    q_ref, kl_ref = analysis.hv_reference
    if not math.isfinite(kl_ref):
        return ["No finished trial with a finite KL: no front hypervolume yet.", ""]
    return [
        "Front hypervolume per method: the area of the (quality ↑, KL ↓) plane that the "
        "method's finished trials (every lr; seed replicates excluded) dominate, measured "
        f"from the reference point quality {q_ref:g}, KL {kl_ref:.4g}. The reference KL is "
        "1.1 × the largest finite KL of this report's finished trials (all methods), so every "
        "method's most-KL point still counts; larger is better. Two sweeps compare by this "
        "number when their reference points are equal (summary.csv: `front_hypervolume`, "
        "`hv_ref_quality`, `hv_ref_kl`).",
        "",
        tables.hypervolume_markdown(analysis),
    ]


def render_markdown(
    analysis: Analysis,
    scenario: str,
    store: str,
    figures: list[str],
    paired: PairedAnalysis | None = None,
) -> str:
    c = analysis.counts
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [
        f"# raydaa report: scenario `{scenario}`",
        "",
        f"Built {built} from `{store}`: {c['total']} trials ({c['finished']} finished, "
        f"{c['failed']} failed, {c['diverged']} diverged, {c['pruned']} pruned) of "
        f"{len(analysis.variants)} "
        "method(s). Quality: the scenario judge's score (higher is better; win rate against the "
        "reference policy for the built-in judges). KL: KL(π ‖ π_ref) on the policy's own "
        "samples (k1). Brackets: 95% intervals. A `+sft` method is its single-stage variant "
        "(the SFT term in the loss).",
        "",
        "**Best** = the highest quality among finished trials; ties go to the lower KL, then "
        "to the smaller trial id. Failed, diverged and pruned trials never compete and are "
        "listed below.",
        "",
        "## Best quality per method (paper Table 2 form)",
        "",
        tables.summary_markdown(analysis),
        "Bold: best; underlined: second best. CSV: [summary.csv](summary.csv).",
        "",
        "## Best configuration per method (paper Table 7 form)",
        "",
        tables.best_configs_markdown(analysis)
        if any(v.best for v in analysis.variants)
        else "No finished trial yet.\n",
        "λ is shown where it matters (single-stage, or λ ≠ 1); γ/β for SimPO. "
        "CSV: [best_configs.csv](best_configs.csv).",
        "",
        "## Pareto fronts: quality ↑ vs KL ↓",
        "",
        "Points: for each β, the learning rate (and λ, γ/β where swept) with the best quality, "
        "as the paper draws its fronts (its Appendix A.2). A point is on the front when no "
        "other point has quality ≥ and KL ≤ with one of them strict; identical points both "
        "stay. Bars: 95% intervals on both axes. The pooled fronts (paper Figures 3 and 6) "
        "pool the two-stage methods of each kind.",
        "",
    ]
    for name in figures[:2]:
        out += [f"![{name}]({name}.png)", "", f"Interactive: [{name}.html]({name}.html)", ""]
    out += [
        "Front points per method (all points: [fronts.csv](fronts.csv)):",
        "",
        tables.fronts_markdown(analysis),
        *_hypervolume_section(analysis),
        "## β sensitivity (paper Figure 1 form)",
        "",
        "Quality against β (log scale), best lr per β, one line per method, 95% band.",
        "",
        f"![{figures[2]}]({figures[2]}.png)",
        "",
        f"Interactive: [{figures[2]}.html]({figures[2]}.html)",
        "",
        "## KL against β: Spearman rank correlation",
        "",
        "ρ < 0 means KL rises as β falls (β as a KL penalty, the behaviour DPO is known for); "
        "computed over the best-lr-per-β points, and within each learning rate over every "
        "finished trial at that lr (the lr moves KL too, so the within-lr ρ separates the "
        "two). n/a: fewer than 3 points or a constant side. "
        "CSV: [correlations.csv](correlations.csv).",
        "",
        tables.correlations_markdown(analysis),
    ]
    out += [f"- {v.name}: {_trend(v.correlation.rho, v.correlation.n)}" for v in analysis.variants]
    if paired is not None:
        out += ["", *_paired_section(paired)]
    failures, pruned = tables.failures_table(analysis)[1], tables.pruned_table(analysis)[1]
    out += ["", "## Failed and diverged trials", ""]
    out += (
        [tables.failures_markdown(analysis), "CSV: [failures.csv](failures.csv)."]
        if failures
        else ["None: every trial finished with a quality."] if not pruned
        else ["None: every trial finished with a quality or was pruned (below)."]
    )
    if pruned:
        out += ["", "## Pruned trials", "",
                "Stopped early by a Tune scheduler (`raydaa search --scheduler`) on their "
                "intermediate evaluations: quality and KL are the last ones, on the evaluation "
                "subset of a policy that did not finish training, so they never compete.", "",
                tables.pruned_markdown(analysis), "CSV: [pruned.csv](pruned.csv)."]
    return "\n".join(out) + "\n"


class Sink:
    """Where the report's files go: a local directory (each file written to a temporary
    name and renamed) or an object-store prefix (an object appears only
    once its upload completes)."""

    def __init__(self, out: str) -> None:
        self.out = out
        if not storage.is_uri(out):
            Path(out).mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> str:
        return storage.join(self.out, name)

    def write(self, name: str, data: str | bytes) -> str:
        storage.write_bytes(self.path(name), data)
        return self.path(name)

    def size(self, name: str) -> int | None:
        fs, inner = storage.filesystem(self.path(name))
        info = fs.get_file_info(inner)
        return info.size if info.type == pafs.FileType.File else None


def _write_plotly_js(sink: Sink) -> str:
    """One plotly.js beside the pages (offline-safe, ~4.8 MB once instead of per page);
    rewritten only when missing or from another plotly version."""
    from plotly.offline import get_plotlyjs

    script = get_plotlyjs().encode("utf-8")
    if sink.size("plotly.min.js") != len(script):
        sink.write("plotly.min.js", script)
    return sink.path("plotly.min.js")


def build_report(
    results: str | Path,
    scenario: str,
    out: str | Path | None = None,
    plotly_js: str = "directory",
    records_for: RecordsFor | None = None,
) -> list[str]:
    """Read the store, write every report file (report.md last); returns their storage
    paths. `results` and `out` are directories or s3:// / gs:// URIs. Each trial's
    per-prompt records come from `records_for(row)` (default: read beside the store)."""
    # here, not at the top: raydaa.io.results_store imports torch (via raydaa.core.losses),
    # which `raydaa report --help` and `write_report` (rows given) do not need
    from raydaa.io.results_store import store_root

    if plotly_js not in PLOTLY_JS:
        raise ValueError(f"plotly_js: {plotly_js!r}; expected one of {list(PLOTLY_JS)}")
    rows = load_rows(results, scenario)
    out = storage.resolve(out) if out is not None else default_out(results, scenario)
    if records_for is None:
        records_for = stored_records(results, scenario)
    return write_report(
        rows, scenario, store_root(results, scenario), out, plotly_js, records_for=records_for
    )


def stored_records(results: str | Path, scenario: str) -> RecordsFor:
    """row -> its records at <results>/<scenario>/prompts/<method>/<trial_id>.parquet."""
    from raydaa.io.prompt_records import read_records

    return lambda row: read_records(results, scenario, row["method"], str(row["trial_id"]))


def write_report(
    rows: list[dict],
    scenario: str,
    store: str,
    out: str,
    plotly_js: str = "directory",
    *,
    records_for: RecordsFor | None = None,
    budgets: list[float] | None = None,
    options: Options | None = None,
    paired: PairedAnalysis | None = None,
) -> list[str]:
    """Every report file for `rows` (store rows, e.g. a study's subset) into the storage
    path `out`; `store` is where the rows came from, as report.md names it. The paired
    comparisons read `records_for(row)` (None: no records, each comparison says so) at
    KL `budgets` (default: quartiles of the rows' KL), tested with `options`; or the
    caller's own `paired` analysis of these rows (a study that also quotes it)."""
    analysis = analyse(rows)
    if paired is None:
        paired = analyse_paired(rows, records_for, budgets, options)
    sink = Sink(out)
    written = []
    for name, table in (
        ("summary", tables.summary_table(analysis)),
        ("best_configs", tables.best_configs_table(analysis)),
        ("fronts", tables.fronts_table(analysis)),
        ("correlations", tables.correlations_table(analysis)),
        ("failures", tables.failures_table(analysis)),
        ("pruned", tables.pruned_table(analysis)),
        ("comparisons", tables.comparisons_table(paired)),
        ("matched_kl", tables.matched_kl_table(paired)),
        ("collapsed", tables.collapsed_table(paired)),
    ):
        written.append(sink.write(f"{name}.csv", tables.to_csv(table)))
    figures = []
    if plotly_js == "directory":
        written.append(_write_plotly_js(sink))
    for chart in charts(analysis, scenario):
        written.append(sink.write(f"{chart.name}.png", render_png(chart)))
        written.append(sink.write(f"{chart.name}.html", render_html(chart, PLOTLY_JS[plotly_js])))
        figures.append(chart.name)
    markdown = render_markdown(analysis, scenario, store, figures, paired)
    written.append(sink.write("report.md", markdown))
    return written

