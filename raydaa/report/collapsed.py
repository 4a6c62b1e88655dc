"""Collapsed configurations: several β of one method that trained the same model.

As β → 0 the DAA losses' gradients become collinear (paper Theorem 3.6), and Adam is
invariant to the loss's scale, so at one learning rate a method's small-β configurations
take the same steps and end at the same weights (tiny's DPO β 0.01-0.5 at lr 3e-5, see
docs/reports.md). On a front they look like several points; they are one. Shown as one
point with the β range it spans.

Two finished trials of a variant are the same model when their probes agree: `probe_logp`
(the policy's log-prob of the baseline's sample on a fixed probe batch, the same prompts for
every trial) at the same (source, prompt_id) keys, with

    max |p - q| / (1 + max(|p|, |q|)) <= tolerance      (default 1e-4)

a relative error with an absolute floor: the same weights re-evaluated differ by kernel
rounding (~1e-6 relative), two different models by far more than 1e-4. Where either trial
has no probe (no records, or an older store), the fallback is its row: quality and KL both
equal within 1e-9 (the same samples judged the same way).

Small β rarely gives bit-identical weights: the gradients are collinear only in the limit.
Where the store holds seed replicates of a variant, the smallest probe distance between two
seeds of one configuration measures the training noise, and configurations closer than a
tenth of it (SEED_SHARE) are grouped too: no comparison can tell them apart that could not
tell a model from its own retraining. On tiny's RQ3 (2026-12-03) two seeds of DPO's best
configuration are 0.145 apart, NCA's β 0.001-0.1 at lr 3e-5 within 0.005 of each other,
and β 1 0.04 away.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from raydaa.config.search_space import config_identity, search_rows
from raydaa.report.comparisons import Records, RecordsFor, keys_of
from raydaa.report.select import Row, group_by_variant, usable

TOLERANCE = 1e-4
EXACT = 1e-9
SEED_SHARE = 0.1
"""Configurations whose models differ by less than this share of what retraining one
configuration with another seed changes (its seed distance) are one model for every
comparison the report makes: the β that separates them is below the training noise."""


@dataclass(frozen=True)
class CollapsedGroup:
    """Finished trials of one variant that are one model."""

    variant: str
    trials: tuple[str, ...]
    betas: tuple[float, ...]
    """Sorted, distinct."""
    lrs: tuple[float, ...]
    """Sorted, distinct."""
    quality: float
    kl: float
    """Of the first trial (the smallest β)."""
    evidence: str
    """"probe_logp" (the same model to 1e-4), "probe_logp within 0.1 x the seed distance D"
    (closer than retraining with another seed puts them), or "quality and KL" (the
    fallback without probes)."""


def probe_of(row: Row, records: Records) -> dict[tuple[str, int], float] | None:
    """(source, prompt_id) -> probe_logp, finite values only; None when there is none."""
    cols, _ = records(row)
    if cols is None or "probe_logp" not in cols:
        return None
    where = f"records of trial {row['trial_id']}"
    values = cols["probe_logp"].astype(float)
    probe = {k: float(v) for k, v in zip(keys_of(cols, where), values, strict=True)
             if math.isfinite(v)}  # fmt: skip
    return probe or None


def probe_distance(p: dict, q: dict) -> float | None:
    """max |Δ| / (1 + max |value|) over the probe keys; None when the keys differ."""
    if p.keys() != q.keys():
        return None
    keys = sorted(p)
    a, b = np.array([p[k] for k in keys]), np.array([q[k] for k in keys])
    scale = 1.0 + max(np.abs(a).max(), np.abs(b).max())
    return float(np.abs(a - b).max() / scale)


def same_probe(p: dict, q: dict, tolerance: float = TOLERANCE) -> bool:
    """Same probe keys, and max |Δ| / (1 + max |value|) <= tolerance."""
    distance = probe_distance(p, q)
    return distance is not None and distance <= tolerance


def seed_noise(group: list[Row], probes: dict[str, dict | None]) -> float | None:
    """The smallest probe distance between two seeds of one configuration of a variant:
    how far apart retraining alone puts two models (None without two seeds' probes).
    `probes`: trial id -> its probe, for the group's usable rows."""
    by_config: dict[tuple, list[dict]] = defaultdict(list)
    for row in group:
        if (probe := probes.get(str(row["trial_id"]))) is not None:
            by_config[config_identity(row)].append(probe)
    distances = [
        d
        for probes in by_config.values()
        for i, p in enumerate(probes)
        for q in probes[i + 1 :]
        if (d := probe_distance(p, q)) is not None
    ]
    return min(distances) if distances else None


def _number(value) -> float:
    """A sort key: None and NaN last."""
    return math.inf if value is None or math.isnan(value) else value


def same_metrics(r: Row, s: Row, exact: float = EXACT) -> bool:
    values = [r.get("quality"), s.get("quality"), r.get("kl"), s.get("kl")]
    if any(v is None or not math.isfinite(v) for v in values):
        return False
    return abs(values[0] - values[1]) <= exact and abs(values[2] - values[3]) <= exact


def collapsed_groups(
    rows: list[Row],
    records_for: RecordsFor | Records | None,
    tolerance: float = TOLERANCE,
    exact: float = EXACT,
) -> list[CollapsedGroup]:
    """Per variant, its finished trials grouped by model; groups of two or more, variants
    in report order. Trials are visited by (β, lr, trial id), each joining the first group
    whose first trial it matches (probes when both have one, else the row fallback)."""
    records = records_for if isinstance(records_for, Records) else Records(records_for)
    out = []
    for name, group in group_by_variant(rows).items():
        # each usable trial's probe, built once: the seed noise and the grouping read it
        probes = {str(r["trial_id"]): probe_of(r, records) for r in group if usable(r)}
        noise = seed_noise(group, probes)
        within_seeds = SEED_SHARE * noise if noise is not None else 0.0
        # each configuration once (its search seed): replicates are not configurations
        candidates = sorted(
            (r for r in search_rows(group) if usable(r)),
            key=lambda r: (_number(r.get("beta")), _number(r.get("lr")), str(r["trial_id"])),
        )
        clusters: list[dict] = []  # first row, its probe, members, how they matched
        for row in candidates:
            probe = probes[str(row["trial_id"])]
            for cluster in clusters:
                both = probe is not None and cluster["probe"] is not None
                distance = probe_distance(probe, cluster["probe"]) if both else None
                if distance is not None and distance <= max(tolerance, within_seeds):
                    cluster["members"].append(row)
                    if distance > tolerance:
                        cluster["evidence"] = (f"probe_logp within {SEED_SHARE:g} x the seed "
                                               f"distance {noise:.3g}")  # fmt: skip
                    break
                if not both and same_metrics(row, cluster["first"], exact):
                    cluster["members"].append(row)
                    cluster["evidence"] = "quality and KL"
                    break
            else:
                evidence = "probe_logp" if probe is not None else "quality and KL"
                clusters.append({"first": row, "probe": probe, "members": [row],
                                 "evidence": evidence})  # fmt: skip
        for cluster in clusters:
            first, members = cluster["first"], cluster["members"]
            if len(members) < 2:
                continue
            kl = first.get("kl")
            out.append(CollapsedGroup(
                variant=name,
                trials=tuple(str(r["trial_id"]) for r in members),
                betas=tuple(sorted({r["beta"] for r in members if _number(r.get("beta")) < math.inf})),
                lrs=tuple(sorted({r["lr"] for r in members if _number(r.get("lr")) < math.inf})),
                quality=first["quality"], kl=math.nan if kl is None else kl,
                evidence=cluster["evidence"],
            ))  # fmt: skip
    return out
