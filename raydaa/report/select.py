"""From results-store rows to what the report shows: variants, best configs, best lr per β.

Rows are the store's dicts (`read_store(...).to_pylist()`). Only `finished` rows with a
finite quality compete for "best"; failed, diverged and pruned rows are counted, listed,
and never on a front. A pruned row (a trial a Tune scheduler stopped early) holds the
quality and KL of its last intermediate evaluation, on a prompt subset and a policy that
never finished training: not comparable with a finished row's.

Best = highest quality. Ties break toward the lower KL (a NaN KL counts as worst), then
toward the smaller trial id, so the choice is deterministic.

A variant is the method name, or `<method>+sft` for single-stage rows (sft_weight > 0:
the loss carries the SFT term, paper §4.1, Table 1's †), which are a different recipe and
would otherwise compete with the same method's two-stage rows. Rows of method `external`
(a checkpoint evaluated with `raydaa evaluate --name`) form the variant and kind `external`,
ordered last: compared with the methods, never pooled into a pairwise / pointwise front.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from raydaa.config.search_space import search_rows

STATUSES = ("finished", "failed", "diverged", "pruned")
KINDS = ("pairwise", "pointwise")
EXTERNAL = "external"  # method, variant and kind of a checkpoint trained outside raydaa

Row = dict[str, Any]


class ReportError(Exception):
    """The report cannot be built from what is on disk; the message names the path."""


def load_rows(results: str | Path, scenario: str) -> list[Row]:
    """Every store row of `scenario`, checked: known method, known status. `results` is a
    storage path: a directory, or an s3:// / gs:// URI (raydaa.io.storage)."""
    from raydaa.io import storage
    from raydaa.io.results_store import read_store, row_path, store_root

    root = storage.resolve(results)
    scenario_root = storage.join(root, scenario)
    if not storage.exists(scenario_root):
        local = not storage.is_uri(root) and Path(root).is_dir()
        found = (
            sorted(p.name for p in Path(root).iterdir() if (p / "store").is_dir()) if local else []
        )
        raise ReportError(
            f"no results for scenario {scenario!r}: {scenario_root} does not exist "
            f"(scenarios with a store under {root}: {found or 'none'}; run "
            f"`raydaa search --scenario {scenario} --method M` first, or pass --results DIR)"
        )
    store = store_root(root, scenario)
    rows = read_store(root, scenario).to_pylist()
    if not rows:
        raise ReportError(
            f"the results store {store} holds no rows yet "
            f"(no trial of scenario {scenario!r} has finished or failed)"
        )
    for row in rows:
        where = row_path(root, scenario, str(row["method"]), str(row["trial_id"]))
        kind_of(row["method"], where)
        if row["status"] not in STATUSES:
            raise ReportError(f"{where}: status {row['status']!r}; expected one of {STATUSES}")
    return rows


def kind_of(method: str, where: object = "") -> str:
    """pairwise / pointwise, from the loss registry; `external` for an external checkpoint."""
    from raydaa.core.methods import METHOD_SPECS

    if method == EXTERNAL:
        return EXTERNAL
    spec = METHOD_SPECS.get(method)
    if spec is None:
        raise ReportError(
            f"{where}: unknown method {method!r}; expected one of "
            f"{', '.join(METHOD_SPECS)}, {EXTERNAL}"
        )
    return spec.preference_kind


def variant(row: Row) -> str:
    if row["method"] == EXTERNAL:
        return EXTERNAL
    sft_weight = row.get("sft_weight")
    single_stage = sft_weight is not None and not math.isnan(sft_weight) and sft_weight > 0
    return f"{row['method']}+sft" if single_stage else row["method"]


def method_of(variant_name: str) -> str:
    return variant_name.removesuffix("+sft")


def variant_order(names: set[str] | list[str]) -> list[str]:
    """Pairwise methods first, then pointwise (the paper's Table 2), registry order within,
    a method's single-stage variant right after it; `external` last."""
    from raydaa.core.methods import METHODS

    def key(name: str) -> tuple:
        method = method_of(name)
        if method == EXTERNAL:
            return (len(KINDS), 0, False)
        return (KINDS.index(kind_of(method)), METHODS.index(method), name.endswith("+sft"))

    return sorted(set(names), key=key)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def usable(row: Row) -> bool:
    """May compete for best and appear in plots: finished with a finite quality."""
    return row["status"] == "finished" and _finite(row.get("quality"))


def best_key(row: Row) -> tuple:
    """Sort key: the best row sorts first (see the module docstring for the tie rule)."""
    kl = row.get("kl")
    return (-row["quality"], kl if _finite(kl) else math.inf, str(row["trial_id"]))


def best_row(rows: list[Row]) -> Row | None:
    """The best usable row among each configuration's lowest-seed rows (seed replicates
    never let a configuration win by the max over its seeds)."""
    candidates = [r for r in search_rows(rows) if usable(r)]
    return min(candidates, key=best_key) if candidates else None


def best_lr_per_beta(rows: list[Row]) -> list[Row]:
    """For each β, the usable row with the best quality over the other hyperparameters
    (lr, and λ / γ/β / epochs where a sweep varies them), sorted by β: the points the paper
    draws its fronts and β curves with."""
    by_beta: dict[float, list[Row]] = defaultdict(list)
    for row in search_rows(rows):
        if usable(row) and _finite(row.get("beta")):
            by_beta[row["beta"]].append(row)
    return [min(group, key=best_key) for _, group in sorted(by_beta.items())]


def group_by_variant(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[variant(row)].append(row)
    return {name: groups[name] for name in variant_order(groups)}


def status_counts(rows: list[Row]) -> dict[str, int]:
    counts = Counter(row["status"] for row in rows)
    return {status: counts.get(status, 0) for status in STATUSES} | {"total": len(rows)}
