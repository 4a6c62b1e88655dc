"""Is the difference real? Paired comparisons of variants' best configurations.

From store rows (raydaa.report.select) and a loader of each trial's per-prompt records
(`records_for(row) -> pyarrow.Table | dict of numpy arrays | None`, columns of
raydaa.io.prompt_records; None: the trial has none, e.g. an older store):

    best_pairs      every pair of variants' best configurations, Holm over the pairs
    matched_kl      the same at KL budgets: each variant's best config with KL <= budget
    kinds           pooled two-stage pairwise vs pointwise (the paper's central claim)
    seed_spread     quality across the seeds of each configuration trained more than once
    head_to_head    A's samples judged directly against B's on the same prompts

A configuration's seed replicates (same method, β, lr, λ, SFT weight, γ/β, normalization,
epochs; another seed) enter a comparison together: its matrix is (seeds, prompts) and
raydaa.report.paired bootstraps the seeds too. Outcomes are aligned by (source, prompt_id)
and kept only where every trial of both sides was judged. A comparison that cannot be made
(no finished trial, no records, no common prompt) is kept with its reason, never raised.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np

from raydaa.config.search_space import config_identity
from raydaa.report.paired import PairedResult, holm, paired_difference, verdict
from raydaa.report.select import (
    EXTERNAL,
    KINDS,
    Row,
    best_row,
    group_by_variant,
    kind_of,
    method_of,
    usable,
    variant,
)

RecordsFor = Callable[[Row], Any]
"""row -> its records: a pyarrow.Table, a mapping of column name to array, or None."""

BUDGET_QUANTILES = (0.25, 0.5, 0.75)
NO_LOADER = "per-prompt records were not loaded for these rows"


@dataclass(frozen=True)
class Options:
    """How every comparison of one report is tested."""

    resamples: int = 10_000
    seed: int = 0
    alpha: float = 0.05
    power: float = 0.8


@dataclass(frozen=True)
class Comparison:
    """A (first variant) vs B over the prompts both were judged on."""

    family: str
    """Holm family: "best", "KL <= <budget>", or "pairwise vs pointwise"."""
    a: str
    b: str
    a_config: str = ""
    b_config: str = ""
    a_trials: tuple[str, ...] = ()
    b_trials: tuple[str, ...] = ()
    budget: float = math.nan
    """KL budget the configurations were chosen under (NaN: none)."""
    result: PairedResult | None = None
    p_holm: float = math.nan
    verdict: str = "skipped"
    """"A better", "B better", "indistinguishable", or "skipped" (see reason)."""
    reason: str = ""
    note: str = ""
    """What was left out of a comparison that was made (a seed without records)."""


@dataclass(frozen=True)
class SeedSpread:
    """Quality across the seeds of one configuration."""

    variant: str
    config: str
    trials: tuple[str, ...]
    seeds: tuple[int | None, ...]
    mean: float
    sd: float
    min: float
    max: float


# ---------------------------------------------------------------------------------------
# Configurations and records
# ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """NaN and None are the same 'unset' (NaN != NaN would split a config)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def config_key(row: Row) -> tuple:
    """What makes rows seed replicates: the configuration identity `raydaa replicate` uses
    (raydaa.config.search_space.config_identity); each external checkpoint is its own."""
    if row["method"] == EXTERNAL:
        return (EXTERNAL, str(row["trial_id"]))
    return config_identity(row)


def config_label(row: Row, with_variant: bool = False) -> str:
    """β=0.1, lr=1e-06 (λ where it matters, γ/β for SimPO); an external checkpoint's name."""
    if row["method"] == EXTERNAL:
        label = str(row["trial_id"])
    else:
        parts = [f"β={row.get('beta'):g}" if _plain(row.get("beta")) is not None else "β=—"]
        if _plain(row.get("lr")) is not None:
            parts.append(f"lr={row['lr']:g}")
        sft, lam = _plain(row.get("sft_weight")), _plain(row.get("lambda_"))
        if (sft is not None and sft > 0) or (lam is not None and lam != 1.0):
            parts.append(f"λ={lam:g}" if lam is not None else "λ=—")
        if row["method"] == "simpo" and _plain(row.get("gamma_beta_ratio")) is not None:
            parts.append(f"γ/β={row['gamma_beta_ratio']:g}")
        label = ", ".join(parts)
    return f"{variant(row)}: {label}" if with_variant else label


def replicates(rows: Iterable[Row], chosen: Row) -> list[Row]:
    """The usable rows of `chosen`'s configuration (its seeds): `chosen` first, then the
    others by seed and trial id."""
    key = config_key(chosen)
    others = [r for r in rows if usable(r) and config_key(r) == key and r is not chosen]
    others.sort(key=lambda r: (_plain(r.get("seed")) or 0, str(r["trial_id"])))
    return [chosen, *others]


def columns(records: Any, where: str = "records") -> dict[str, np.ndarray]:
    """A pyarrow table or a mapping of columns as numpy arrays of equal length."""
    if hasattr(records, "column_names"):  # pyarrow.Table, without importing pyarrow
        return {n: records.column(n).to_numpy(zero_copy_only=False) for n in records.column_names}
    if not isinstance(records, Mapping):
        raise TypeError(f"{where}: expected a pyarrow.Table or a dict of arrays, got "
                        f"{type(records).__name__}")  # fmt: skip
    out = {str(k): np.asarray(v) for k, v in records.items()}
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: columns of different lengths {lengths}")
    return out


def keys_of(cols: dict[str, np.ndarray], where: str) -> list[tuple[str, int]]:
    """(source, prompt_id) per record; a records set without `source` is all validation."""
    if "prompt_id" not in cols:
        raise KeyError(f"{where}: no prompt_id column (columns: {sorted(cols)})")
    ids = cols["prompt_id"]
    sources = cols.get("source", np.full(len(ids), "validation", dtype=object))
    return [(str(s), int(i)) for s, i in zip(sources, ids, strict=True)]


class Records:
    """The loader, called once per trial (comparisons reuse the same trials many times);
    a missing or unreadable records file becomes a reason, not an exception."""

    def __init__(self, records_for: RecordsFor | None) -> None:
        self.records_for = records_for
        self._cache: dict[tuple[str, str], tuple[dict[str, np.ndarray] | None, str]] = {}

    def __call__(self, row: Row) -> tuple[dict[str, np.ndarray] | None, str]:
        """(columns, "") or (None, why not)."""
        where = f"records of trial {row['trial_id']} ({row['method']})"
        key = (str(row["method"]), str(row["trial_id"]))
        if key not in self._cache:
            if self.records_for is None:
                self._cache[key] = None, NO_LOADER
            else:
                try:
                    loaded = self.records_for(row)
                    if loaded is None:
                        self._cache[key] = None, (f"no per-prompt records for trial "
                                                  f"{row['trial_id']} ({row['method']}; "
                                                  "written before records existed?)")  # fmt: skip
                    else:
                        self._cache[key] = columns(loaded, where), ""
                except (OSError, ValueError, KeyError, TypeError) as err:
                    self._cache[key] = None, f"{where} could not be read: {err}"
        return self._cache[key]


def verdicts_of(cols: dict[str, np.ndarray], where: str) -> dict[tuple[str, int], float]:
    """(source, prompt_id) -> verdict, judged prompts only; a prompt listed twice is an
    error naming the records."""
    if "verdict" not in cols:
        raise KeyError(f"{where}: no verdict column (columns: {sorted(cols)})")
    keys = keys_of(cols, where)
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})[:3]
        raise ValueError(f"{where}: prompt(s) {twice} listed more than once")
    values = cols["verdict"].astype(float)
    return {k: float(v) for k, v in zip(keys, values, strict=True) if math.isfinite(v)}


# ---------------------------------------------------------------------------------------
# One comparison
# ---------------------------------------------------------------------------------------


def _side_outcomes(rows: list[Row], records: Records):
    """Per replicate with records: its judged verdicts; and what was left out."""
    found, missing = [], []
    for row in rows:
        cols, why = records(row)
        if cols is None:
            missing.append(why)
            continue
        found.append((row, verdicts_of(cols, f"records of trial {row['trial_id']}")))
    return found, missing


def compare_configs(
    family: str, a: str, a_rows: list[Row], b: str, b_rows: list[Row], records: Records,
    options: Options, budget: float = math.nan, with_variant: bool = False,
) -> Comparison:  # fmt: skip
    """A's configuration (its seed replicates a_rows, best first) vs B's, unadjusted."""
    base = Comparison(
        family, a, b,
        a_config=config_label(a_rows[0], with_variant), b_config=config_label(b_rows[0], with_variant),
        a_trials=tuple(str(r["trial_id"]) for r in a_rows),
        b_trials=tuple(str(r["trial_id"]) for r in b_rows), budget=budget,
    )  # fmt: skip
    try:
        found_a, missing_a = _side_outcomes(a_rows, records)
        found_b, missing_b = _side_outcomes(b_rows, records)
    except (KeyError, ValueError) as err:
        return replace(base, reason=str(err))
    if not found_a or not found_b:
        return replace(base, reason=(missing_a or missing_b)[0])
    common = set.intersection(*(set(v) for _, v in found_a + found_b))
    if not common:
        return replace(base, reason="no prompt was judged for both sides")
    keys = sorted(common)
    matrix_a = np.array([[v[k] for k in keys] for _, v in found_a])  # (seeds_a, prompts)
    matrix_b = np.array([[v[k] for k in keys] for _, v in found_b])  # (seeds_b, prompts)
    result = paired_difference(
        matrix_a, matrix_b, resamples=options.resamples, seed=options.seed,
        alpha=options.alpha, power=options.power,
    )  # fmt: skip
    note = "; ".join(f"left out: {m}" for m in missing_a + missing_b)
    return replace(
        base, result=result, note=note,
        a_trials=tuple(str(r["trial_id"]) for r, _ in found_a),
        b_trials=tuple(str(r["trial_id"]) for r, _ in found_b),
    )  # fmt: skip


def adjust(comparisons: list[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """Holm over the comparisons that were made (one family), and their verdicts."""
    raw = [c.result.p_value if c.result else math.nan for c in comparisons]
    out = []
    for c, p in zip(comparisons, holm(raw), strict=True):
        if c.result is None:
            out.append(c)
        else:
            out.append(replace(c, p_holm=p, verdict=verdict(c.result.difference, p, alpha)))
    return out


class Memo:
    """The same two sets of trials are compared once (a variant's best config is often
    also its best under a KL budget)."""

    def __init__(self, records: Records, options: Options) -> None:
        self.records, self.options = records, options
        self._done: dict[tuple, Comparison] = {}

    def __call__(self, family, a, a_rows, b, b_rows, budget=math.nan, with_variant=False):
        key = (tuple(str(r["trial_id"]) for r in a_rows), tuple(str(r["trial_id"]) for r in b_rows),
               with_variant)  # fmt: skip
        if key not in self._done:
            self._done[key] = compare_configs(family, a, a_rows, b, b_rows, self.records,
                                              self.options, budget, with_variant)  # fmt: skip
        return replace(self._done[key], family=family, budget=budget, a=a, b=b)


# ---------------------------------------------------------------------------------------
# The report's families
# ---------------------------------------------------------------------------------------


def _chosen(rows: list[Row], budget: float | None) -> Row | None:
    """The best usable row, among those with a finite KL <= budget when one is given."""
    if budget is None or math.isnan(budget):
        return best_row(rows)
    kl = lambda r: _plain(r.get("kl"))  # noqa: E731
    return best_row([r for r in rows if kl(r) is not None and kl(r) <= budget])


def _pairs(groups: dict[str, list[Row]], family: str, budget: float, memo: Memo,
           only: tuple[str, str] | None = None) -> list[Comparison]:  # fmt: skip
    where = "" if math.isnan(budget) else f" with KL ≤ {budget:.4g}"
    chosen = {name: _chosen(rows, budget) for name, rows in groups.items()}
    pairs = [only] if only else list(combinations(groups, 2))
    out = []
    for a, b in pairs:
        missing = [n for n in (a, b) if chosen.get(n) is None]
        if missing:
            out.append(Comparison(family, a, b, budget=budget,
                                  reason=f"{' and '.join(missing)}: no finished trial{where}"))  # fmt: skip
            continue
        out.append(memo(family, a, replicates(groups[a], chosen[a]),
                        b, replicates(groups[b], chosen[b]), budget))  # fmt: skip
    return out


def kl_budgets(rows: list[Row], quantiles: Sequence[float] = BUDGET_QUANTILES) -> list[float]:
    """KL budgets spanning the fronts: quantiles of the finished trials' finite KL."""
    values = [r["kl"] for r in rows if usable(r) and _plain(r.get("kl")) is not None]
    if not values:
        return []
    return sorted({float(q) for q in np.quantile(values, quantiles)})


def best_pairs(rows: list[Row], records_for: RecordsFor | Records | None,
               options: Options = Options(), *, memo: Memo | None = None) -> list[Comparison]:  # fmt: skip
    """Every pair of variants' best configurations; Holm over the pairs."""
    memo = memo or Memo(_records(records_for), options)
    return adjust(_pairs(group_by_variant(rows), "best", math.nan, memo), options.alpha)


def matched_kl(rows: list[Row], records_for: RecordsFor | Records | None,
               budgets: Sequence[float] | None = None, options: Options = Options(), *,
               memo: Memo | None = None) -> list[Comparison]:  # fmt: skip
    """Per KL budget (default: `kl_budgets`), every pair of variants' best configurations
    with KL <= budget; Holm within each budget."""
    memo = memo or Memo(_records(records_for), options)
    groups = group_by_variant(rows)
    out = []
    for budget in kl_budgets(rows) if budgets is None else budgets:
        family = f"KL ≤ {budget:.4g}"
        out += adjust(_pairs(groups, family, float(budget), memo), options.alpha)
    return out


def pooled_kinds(rows: list[Row]) -> dict[str, list[Row]]:
    """kind -> the rows of its two-stage variants (no `+sft`, no external checkpoint)."""
    pooled: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    for row in rows:
        name = variant(row)
        kind = kind_of(method_of(name))
        if kind in pooled and not name.endswith("+sft"):
            pooled[kind].append(row)
    return pooled


def kinds(rows: list[Row], records_for: RecordsFor | Records | None,
          budgets: Sequence[float] | None = None, options: Options = Options(), *,
          memo: Memo | None = None) -> list[Comparison]:  # fmt: skip
    """Pooled pairwise vs pooled pointwise: each pool's best configuration, overall and at
    each KL budget; Holm over these (1 + budgets) comparisons."""
    memo = memo or Memo(_records(records_for), options)
    pooled = pooled_kinds(rows)
    out = []
    for budget in [math.nan, *(kl_budgets(rows) if budgets is None else budgets)]:
        chosen = {k: _chosen(pooled[k], budget) for k in KINDS}
        missing = [k for k in KINDS if chosen[k] is None]
        if missing:
            where = "" if math.isnan(budget) else f" with KL ≤ {budget:.4g}"
            out.append(Comparison("pairwise vs pointwise", *KINDS, budget=float(budget),
                                  reason=f"{' and '.join(missing)}: no finished two-stage trial{where}"))  # fmt: skip
            continue
        out.append(memo("pairwise vs pointwise", KINDS[0], replicates(pooled[KINDS[0]], chosen[KINDS[0]]),
                        KINDS[1], replicates(pooled[KINDS[1]], chosen[KINDS[1]]),
                        float(budget), with_variant=True))  # fmt: skip
    return adjust(out, options.alpha)


def compare_variants(rows: list[Row], a: str, b: str, records_for: RecordsFor | Records | None,
                     budgets: Sequence[float] | None = None,
                     options: Options = Options()) -> list[Comparison]:  # fmt: skip
    """One pair (`raydaa compare`): best vs best (its own family: unadjusted), then at each
    KL budget (Holm over the budgets)."""
    groups = group_by_variant(rows)
    for name in (a, b):
        if name not in groups:
            raise KeyError(f"no variant {name!r} in the store; variants: {list(groups)}")
    memo = Memo(_records(records_for), options)
    best = adjust(_pairs(groups, "best", math.nan, memo, only=(a, b)), options.alpha)
    at_kl = [
        c for budget in (kl_budgets(rows) if budgets is None else budgets)
        for c in _pairs(groups, f"KL ≤ {budget:.4g}", float(budget), memo, only=(a, b))
    ]  # fmt: skip
    return best + adjust(at_kl, options.alpha)


def _records(records_for: RecordsFor | Records | None) -> Records:
    return records_for if isinstance(records_for, Records) else Records(records_for)


def seed_spread(rows: list[Row]) -> list[SeedSpread]:
    """Each configuration with two or more finished seeds: its quality's mean, sd (ddof=1),
    min and max across them."""
    by_config: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if usable(row):
            by_config[config_key(row)].append(row)
    out = []
    for group in by_config.values():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda r: (_plain(r.get("seed")) or 0, str(r["trial_id"])))
        q = np.array([r["quality"] for r in group], dtype=float)
        out.append(SeedSpread(
            variant(group[0]), config_label(group[0]), tuple(str(r["trial_id"]) for r in group),
            tuple(_plain(r.get("seed")) for r in group), float(q.mean()), float(q.std(ddof=1)),
            float(q.min()), float(q.max()),
        ))  # fmt: skip
    return sorted(out, key=lambda s: (s.variant, s.config))


# ---------------------------------------------------------------------------------------
# Head to head
# ---------------------------------------------------------------------------------------


def head_to_head(
    judge, records_a: Any, records_b: Any, options: Options = Options()
) -> PairedResult:
    """A's samples judged directly against B's on the prompts both answered (aligned by
    (source, prompt_id); prompts from the records' JSON). `judge.compare(prompts,
    candidates, baselines)` gives 1 / 0.5 / 0 per prompt for A; the result tests
    outcome - 0.5 against 0 (difference > 0: A preferred)."""
    import json

    cols_a, cols_b = columns(records_a, "records A"), columns(records_b, "records B")
    texts = []
    for cols, where in ((cols_a, "records A"), (cols_b, "records B")):
        for name in ("prompt", "policy_text"):
            if name not in cols:
                raise KeyError(f"{where}: no {name} column (columns: {sorted(cols)})")
        texts.append({
            k: (p, t) for k, p, t in zip(keys_of(cols, where), cols["prompt"], cols["policy_text"],
                                         strict=True)
            if isinstance(t, str)
        })  # fmt: skip
    keys = sorted(set(texts[0]) & set(texts[1]))
    if not keys:
        raise ValueError("head to head: no prompt has a policy sample in both records")
    prompts = [json.loads(texts[0][k][0]) for k in keys]
    outcomes = np.asarray(
        judge.compare(prompts, [texts[0][k][1] for k in keys], [texts[1][k][1] for k in keys]),
        dtype=float,
    )
    outcomes = outcomes[np.isfinite(outcomes)]  # a judge may leave a pair undecided (NaN)
    if not len(outcomes):
        raise ValueError(f"head to head: the judge decided none of the {len(keys)} prompts")
    return paired_difference(
        outcomes, np.full(len(outcomes), 0.5),
        resamples=options.resamples, seed=options.seed, alpha=options.alpha, power=options.power,
    )  # fmt: skip
