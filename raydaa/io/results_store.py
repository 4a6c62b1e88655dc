"""The results store: one row per trial, finished, failed, diverged or pruned (DESIGN.md
contract).

Each trial's row is its own small Parquet file under `<results>/<scenario>/store/<method>/`,
written to a temporary name and renamed (a directory, also NFS) or uploaded as one object
(s3://, gs://: an object appears only once complete), through pyarrow.fs. Concurrent
writers (trials on several nodes) never touch the same file, a reader never sees half a
row, and a re-run of the same trial id replaces its row instead of adding a second one.
`read_store` gathers them with pyarrow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raydaa.core.methods import LOSS_FIELD_TYPES
from raydaa.io import storage

_ARROW_TYPES = {float: pa.float64(), int: pa.int64(), str: pa.string()}
# The loss configuration's own fields: a new loss hyperparameter gets its column here.
_LOSS_COLUMNS = [(name, _ARROW_TYPES[kind]) for name, kind in LOSS_FIELD_TYPES.items()]

PHASE_COLUMNS = ("launch_seconds", "imports_seconds", "engine_seconds", "train_seconds",
                 "save_seconds", "teardown_seconds", "eval_seconds")
"""Where a trial's wall time went, in order (raydaa.train.timeline.phase_seconds)."""
SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("scenario", pa.string()),
        *_LOSS_COLUMNS,
        ("lr", pa.float64()),
        ("epochs", pa.int64()),
        ("seed", pa.int64()),
        ("status", pa.string()),  # finished | failed | diverged | pruned
        ("error", pa.string()),
        ("quality", pa.float64()),
        ("quality_low", pa.float64()),
        ("quality_high", pa.float64()),
        ("kl", pa.float64()),
        ("kl_low", pa.float64()),
        ("kl_high", pa.float64()),
        ("kl_k3", pa.float64()),
        # Where quality and KL were measured: the policy of step `eval_step` (the run's
        # last; a pruned trial's last intermediate evaluation) on `eval_prompts` prompts.
        ("eval_step", pa.int64()),
        ("eval_prompts", pa.int64()),
        ("final_loss", pa.float64()),
        ("reward_accuracy", pa.float64()),
        ("diverged_step", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("device_seconds", pa.float64()),
        ("checkpoint_path", pa.string()),
        # Where the trial ran and what it read: storage paths every node sees.
        ("node_id", pa.string()),  # Ray node of the training run's rank 0 (its last attempt)
        ("hostname", pa.string()),
        ("reference_path", pa.string()),  # the SFT (reference) checkpoint it started from
        ("reference_cache", pa.string()),  # the reference log-prob cache it read
        # Peak memory, MiB: training's per worker (max over workers), evaluation's process
        ("peak_rss_mib", pa.float64()),
        ("peak_gpu_mib", pa.float64()),
        ("eval_peak_rss_mib", pa.float64()),
        ("eval_peak_gpu_mib", pa.float64()),
        ("sampling_tokens_per_s", pa.float64()),  # the policy's validation samples
        # Wall seconds of the trial's phases (raydaa.train.timeline.phase_seconds)
        *((name, pa.float64()) for name in PHASE_COLUMNS),
    ]
)


def store_root(results: str | Path, scenario: str) -> str:
    """The store's storage path: a directory or an object-store URI."""
    return storage.join(storage.resolve(results), scenario, "store")


def store_dir(results: str | Path, scenario: str) -> Path:
    """The store as a local (or NFS) directory; object-store results have none."""
    if storage.is_uri(results):
        raise ValueError(f"results {results} are in an object store: use store_root()")
    return Path(store_root(results, scenario))


def _clean(value: Any, field: pa.Field) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(field.type):
        return float(value)
    if pa.types.is_integer(field.type):
        return None if isinstance(value, float) and math.isnan(value) else int(value)
    return str(value)


def write_row(results: str | Path, scenario: str, row: dict[str, Any]) -> str:
    """Write one trial's row atomically; unknown keys are an error, missing ones null.
    Returns the row's storage path."""
    unknown = sorted(set(row) - set(SCHEMA.names))
    if unknown:
        raise KeyError(f"results store has no column(s) {unknown}; columns: {SCHEMA.names}")
    if not row.get("trial_id"):
        raise ValueError("a results-store row needs a trial_id")
    table = pa.table({f.name: [_clean(row.get(f.name), f)] for f in SCHEMA}, schema=SCHEMA)
    final = row_path(results, scenario, str(row["method"]), str(row["trial_id"]))
    storage.write_table(final, table)
    return final


def row_path(results: str | Path, scenario: str, method: str, trial_id: str) -> str:
    return storage.join(store_root(results, scenario), str(method), f"{trial_id}.parquet")


def read_row(results: str | Path, scenario: str, method: str, trial_id: str) -> dict | None:
    """One trial's row, or None if it has none yet."""
    path = row_path(results, scenario, method, trial_id)
    if not storage.exists(path):
        return None
    fs, local = storage.filesystem(path)
    return pq.read_table(local, filesystem=fs, schema=SCHEMA).to_pylist()[0]


def read_store(results: str | Path, scenario: str, method: str | None = None) -> pa.Table:
    """Every row of a scenario (or one method), as one Arrow table (empty if none yet)."""
    root = store_root(results, scenario)
    files = storage.list_files(storage.join(root, method) if method else root, ".parquet")
    if not files:
        return SCHEMA.empty_table()
    fs, _ = storage.filesystem(root)
    paths = [storage.filesystem(f)[1] for f in files]
    return pads.dataset(paths, schema=SCHEMA, format="parquet", filesystem=fs).to_table()
