"""Everything the report shows, computed once from the store rows (no files, no plots).

`analyse` needs the rows only; `analyse_paired` also reads each trial's per-prompt records
for the paired comparisons (raydaa.report.comparisons, .collapsed). An `external` variant
(a checkpoint evaluated with `raydaa evaluate --name`) has its own kind and joins no pooled
pairwise / pointwise front.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raydaa.config.search_space import search_rows
from raydaa.report.pareto import hypervolume, pareto_mask
from raydaa.report.select import (
    KINDS,
    Row,
    best_lr_per_beta,
    best_row,
    group_by_variant,
    kind_of,
    method_of,
    status_counts,
    usable,
)
from raydaa.report.stats import spearman

if TYPE_CHECKING:  # scipy is imported only when the paired analysis runs
    from raydaa.report.collapsed import CollapsedGroup
    from raydaa.report.comparisons import Comparison, Options, RecordsFor, SeedSpread


@dataclass
class Correlation:
    """Spearman ρ of KL against β: over the best-lr-per-β points, and within each lr."""

    rho: float
    n: int
    per_lr: dict[float, tuple[float, int]] = field(default_factory=dict)


@dataclass
class VariantReport:
    name: str
    kind: str
    rows: list[Row]
    counts: dict[str, int]
    best: Row | None
    points: list[Row]
    """Best lr per β, sorted by β."""
    on_front: list[bool]
    """Per point: on this variant's own Pareto front."""
    on_kind_front: list[bool]
    """Per point: on the pooled pairwise / pointwise front (two-stage variants only)."""
    correlation: Correlation
    hypervolume: float = math.nan
    """Area its front of finished search rows dominates, from Analysis.hv_reference."""


@dataclass
class Analysis:
    variants: list[VariantReport]
    counts: dict[str, int]
    hv_reference: tuple[float, float] = (math.nan, math.nan)
    """(quality, KL) the hypervolumes are measured from (`hv_reference`)."""

    def ranked_best(self) -> list[float]:
        """Distinct best qualities, highest first (for the bold / underline marks)."""
        values = {v.best["quality"] for v in self.variants if v.best is not None}
        return sorted(values, reverse=True)


def _kl(row: Row) -> float:
    value = row.get("kl")
    return math.nan if value is None else value


def kl_beta_correlation(rows: list[Row], points: list[Row]) -> Correlation:
    rho, n = spearman([p["beta"] for p in points], [_kl(p) for p in points])
    by_lr: dict[float, list[Row]] = defaultdict(list)
    for row in rows:
        if usable(row) and row.get("lr") is not None:
            by_lr[row["lr"]].append(row)
    per_lr = {
        lr: spearman([r["beta"] for r in group], [_kl(r) for r in group])
        for lr, group in sorted(by_lr.items())
    }
    return Correlation(rho, n, per_lr)


def hv_reference(rows: list[Row]) -> tuple[float, float]:
    """The hypervolume's reference point: quality 0 (a win rate's floor; lower if some
    quality is below it) and 1.1 x the largest finite KL among the finished rows, of every
    method, so each front's extreme point still adds an area. (NaN, NaN) without such a
    row. Fixed by the rows, not by the method, so methods of one report compare."""
    points = [(r["quality"], _kl(r)) for r in rows if usable(r) and math.isfinite(_kl(r))]
    if not points:
        return math.nan, math.nan
    top = max(k for _, k in points)
    return min(0.0, min(q for q, _ in points)), top + 0.1 * abs(top)


def front_hypervolume(rows: list[Row], reference: tuple[float, float]) -> float:
    """The hypervolume of a variant's finished search rows (every lr, not only the best per
    β; a configuration's seed replicates excluded, as for "best")."""
    done = [r for r in search_rows(rows) if usable(r)]
    return hypervolume([r["quality"] for r in done], [_kl(r) for r in done], reference)


def analyse(rows: list[Row]) -> Analysis:
    variants = []
    reference = hv_reference(rows)
    for name, group in group_by_variant(rows).items():
        points = best_lr_per_beta(group)
        front = pareto_mask([p["quality"] for p in points], [_kl(p) for p in points])
        variants.append(
            VariantReport(
                name=name,
                kind=kind_of(method_of(name)),
                rows=group,
                counts=status_counts(group),
                best=best_row(group),
                points=points,
                on_front=[bool(f) for f in front],
                on_kind_front=[False] * len(points),
                correlation=kl_beta_correlation(group, points),
                hypervolume=front_hypervolume(group, reference),
            )
        )
    # Pooled fronts (paper Figures 3 and 6): the two-stage variants' points of one kind.
    for kind in KINDS:
        members = [v for v in variants if v.kind == kind and not v.name.endswith("+sft")]
        pooled = [(v, i) for v in members for i in range(len(v.points))]
        mask = pareto_mask(
            [v.points[i]["quality"] for v, i in pooled], [_kl(v.points[i]) for v, i in pooled]
        )
        for (v, i), on in zip(pooled, mask, strict=True):
            v.on_kind_front[i] = bool(on)
    return Analysis(variants=variants, counts=status_counts(rows), hv_reference=reference)


@dataclass
class PairedAnalysis:
    """The report's "Is the difference real?" section (raydaa.report.comparisons)."""

    pairs: list[Comparison]
    """Every pair of variants' best configurations (one Holm family)."""
    matched: list[Comparison]
    """The same at each KL budget (one Holm family per budget)."""
    kinds: list[Comparison]
    """Pooled pairwise vs pointwise, overall and at each budget (one Holm family)."""
    budgets: list[float]
    spread: list[SeedSpread]
    collapsed: list[CollapsedGroup]
    with_records: int
    """Finished trials whose per-prompt records were found."""
    finished: int
    missing_records: str = ""
    """Why the first finished trial without records has none ("" when all have them)."""


def analyse_paired(
    rows: list[Row],
    records_for: RecordsFor | None,
    budgets: Sequence[float] | None = None,
    options: Options | None = None,
) -> PairedAnalysis:
    """Paired comparisons, seed spread and collapsed groups of `rows`; `records_for(row)`
    gives a trial's per-prompt records or None (None as the loader: none loaded)."""
    from raydaa.report.collapsed import collapsed_groups
    from raydaa.report.comparisons import (
        Memo,
        Options,
        Records,
        best_pairs,
        kinds,
        kl_budgets,
        matched_kl,
        seed_spread,
    )

    options = options or Options()
    records = Records(records_for)
    budgets = kl_budgets(rows) if budgets is None else [float(b) for b in budgets]
    memo = Memo(records, options)
    finished = [r for r in rows if usable(r)]
    loaded = [records(r) for r in finished]
    missing = next((why for cols, why in loaded if cols is None), "")
    return PairedAnalysis(
        pairs=best_pairs(rows, records, options, memo=memo),
        matched=matched_kl(rows, records, budgets, options, memo=memo),
        kinds=kinds(rows, records, budgets, options, memo=memo),
        budgets=budgets,
        spread=seed_spread(rows),
        collapsed=collapsed_groups(rows, records),
        with_records=sum(cols is not None for cols, _ in loaded),
        finished=len(finished),
        missing_records=missing,
    )
