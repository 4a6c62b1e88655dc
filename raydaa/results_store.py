"""The results store: one row per trial, finished, failed or diverged (DESIGN.md contract).

Each trial's row is its own small Parquet file, written to a temporary name and renamed,
under `<results>/<scenario>/store/`. Concurrent writers (trials on several nodes) never
touch the same file, a reader never sees half a row, and a re-run of the same trial id
replaces its row instead of adding a second one. `read_store` gathers them with pyarrow.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("scenario", pa.string()),
        ("method", pa.string()),
        ("beta", pa.float64()),
        ("lr", pa.float64()),
        ("lambda_", pa.float64()),
        ("sft_weight", pa.float64()),
        ("gamma_beta_ratio", pa.float64()),
        ("epochs", pa.int64()),
        ("normalization", pa.string()),
        ("seed", pa.int64()),
        ("status", pa.string()),  # finished | failed | diverged
        ("error", pa.string()),
        ("quality", pa.float64()),
        ("quality_low", pa.float64()),
        ("quality_high", pa.float64()),
        ("kl", pa.float64()),
        ("kl_low", pa.float64()),
        ("kl_high", pa.float64()),
        ("kl_k3", pa.float64()),
        ("final_loss", pa.float64()),
        ("reward_accuracy", pa.float64()),
        ("diverged_step", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("device_seconds", pa.float64()),
        ("checkpoint_path", pa.string()),
    ]
)


def store_dir(results: str | Path, scenario: str) -> Path:
    return Path(results).resolve() / scenario / "store"


def _clean(value: Any, field: pa.Field) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(field.type):
        return float(value)
    if pa.types.is_integer(field.type):
        return None if isinstance(value, float) and math.isnan(value) else int(value)
    return str(value)


def write_row(results: str | Path, scenario: str, row: dict[str, Any]) -> Path:
    """Write one trial's row atomically; unknown keys are an error, missing ones null."""
    unknown = sorted(set(row) - set(SCHEMA.names))
    if unknown:
        raise KeyError(f"results store has no column(s) {unknown}; columns: {SCHEMA.names}")
    if not row.get("trial_id"):
        raise ValueError("a results-store row needs a trial_id")
    directory = store_dir(results, scenario) / str(row["method"])
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table({f.name: [_clean(row.get(f.name), f)] for f in SCHEMA}, schema=SCHEMA)
    final = directory / f"{row['trial_id']}.parquet"
    tmp = directory / f".{row['trial_id']}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    tmp.rename(final)
    return final


def read_store(results: str | Path, scenario: str, method: str | None = None) -> pa.Table:
    """Every row of a scenario (or one method), as one Arrow table (empty if none yet)."""
    root = store_dir(results, scenario) / (method or "")
    files = sorted(str(p) for p in root.rglob("*.parquet")) if root.exists() else []
    if not files:
        return SCHEMA.empty_table()
    return pads.dataset(files, schema=SCHEMA, format="parquet").to_table()
