"""Per-prompt evaluation records: one Parquet file per trial, beside the results store.

A trial's row holds aggregates (win rate, KL); its records hold what they were averaged
from, prompt by prompt, so that any two trials of a scenario can be compared pairwise
afterwards (the same `prompt_id` is the same prompt in every trial). They live at
`<results>/<scenario>/prompts/<method>/<trial_id>.parquet`, outside `store/`, whose every
Parquet file `read_store` reads as a row. Written atomically like the rows (one file per
trial, a rerun replaces it), on a directory or an object store alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raydaa.io import storage

RECORDS_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int64()),  # index in the scenario's evaluation prompts
        ("source", pa.string()),  # "validation", or "judge" (the judge's own prompt set)
        ("prompt", pa.string()),  # JSON text: a string or a list of chat messages
        ("policy_text", pa.string()),
        ("baseline_text", pa.string()),  # null where the prompt has no baseline answer
        ("policy_tokens", pa.int64()),
        ("baseline_tokens", pa.int64()),
        ("verdict", pa.float64()),  # 1 win, 0.5 tie, 0 loss vs the baseline; NaN: not judged
        ("kl_k1", pa.float64()),  # per-prompt KL estimates of the policy's sample;
        ("kl_k3", pa.float64()),  # NaN on judge-only rows
        # log π(baseline's sample | prompt): the same probe for every trial of a scenario,
        # equal values mean the same model
        ("probe_logp", pa.float64()),
    ]
)


def records_path(results: str | Path, scenario: str, method: str, trial_id: str) -> str:
    """Storage path of one trial's records."""
    for what, value in (("method", method), ("trial_id", trial_id)):
        if not value or "/" in str(value) or str(value).startswith("."):
            raise ValueError(f"records need a {what} usable as a file name, got {value!r}")
    root = storage.join(storage.resolve(results), scenario, "prompts")
    return storage.join(root, str(method), f"{trial_id}.parquet")


def _clean(value: Any, field: pa.Field, n: int) -> Any:
    """One cell in the column's type; None is NaN in a float column (the schema's 'not
    measured') and null elsewhere."""
    kind = field.type
    if value is None:
        return math.nan if pa.types.is_floating(kind) else None
    if pa.types.is_string(kind):
        if not isinstance(value, str):
            raise TypeError(
                f"record {n}: column {field.name!r} wants a string"
                f"{' (the prompt as JSON text)' if field.name == 'prompt' else ''}, "
                f"got {type(value).__name__}"
            )
        return value
    try:
        return float(value) if pa.types.is_floating(kind) else int(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"record {n}: column {field.name!r} wants a number, got {value!r}"
        ) from None


def _table(records: list[dict[str, Any]] | pa.Table) -> pa.Table:
    """Records as a table of exactly RECORDS_SCHEMA; an unknown or missing column is an
    error that names it."""
    names = set(RECORDS_SCHEMA.names)
    if isinstance(records, pa.Table):
        _check_columns(set(records.column_names), names, "table")
        try:
            return records.select(RECORDS_SCHEMA.names).cast(RECORDS_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise TypeError(f"records table does not fit RECORDS_SCHEMA: {err}") from None
    for n, record in enumerate(records):
        _check_columns(set(record), names, f"record {n}")
    columns = {
        f.name: [_clean(r[f.name], f, n) for n, r in enumerate(records)] for f in RECORDS_SCHEMA
    }
    return pa.table(columns, schema=RECORDS_SCHEMA)


def _check_columns(given: set[str], names: set[str], what: str) -> None:
    unknown, missing = sorted(given - names), sorted(names - given)
    if unknown:
        raise KeyError(f"{what}: unknown records column(s) {unknown}; columns: {RECORDS_SCHEMA.names}")
    if missing:
        raise KeyError(f"{what}: missing records column(s) {missing}; columns: {RECORDS_SCHEMA.names}")


def write_records(
    results: str | Path,
    scenario: str,
    method: str,
    trial_id: str,
    records: list[dict[str, Any]] | pa.Table,
) -> str:
    """Write one trial's records atomically (replacing earlier ones); returns their path."""
    path = records_path(results, scenario, method, trial_id)
    storage.write_table(path, _table(records))
    return path


def read_records(results: str | Path, scenario: str, method: str, trial_id: str) -> pa.Table | None:
    """One trial's records as a RECORDS_SCHEMA table, or None if it has none."""
    path = records_path(results, scenario, method, trial_id)
    if not storage.exists(path):
        return None
    fs, local = storage.filesystem(path)
    return pq.read_table(local, filesystem=fs, schema=RECORDS_SCHEMA)
