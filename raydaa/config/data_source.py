"""One data source of a scenario (`data.sft`, `data.preference`, `data.validation`): a
string (hub id, local file or folder, `tiny:<split>`) or a mapping {path, name, split,
columns}, read into a typed `DataSource` that the data layer loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FIELDS = ("prompt", "chosen", "rejected", "completion", "messages", "text")
"""Our column names, the targets of a `columns:` mapping (TRL's names)."""

MAPPING_KEYS = ("path", "name", "split", "columns")


@dataclass(frozen=True)
class DataSource:
    """Where one dataset of a scenario comes from and how its columns are named."""

    path: str
    """A hub dataset id, a local file (.jsonl/.json/.csv/.parquet/.arrow), a `save_to_disk`
    folder, a hub-layout folder of shards, or `tiny:<split>`."""
    split: str
    """The split to read ("train"/"test" for the paper's datasets, else the source's own)."""
    name: str | None = None
    """The dataset's config name (`datasets.load_dataset(path, name=...)`); None: the default."""
    columns: dict[str, str] = field(default_factory=dict)
    """Our field -> the source's column, renamed before the checks."""
    key: str = ""
    """Where it was configured (e.g. "data.preference"), for error messages."""


def data_source(value: Any, key: str, split: str | None, default_split: str) -> DataSource:
    """The `DataSource` of one `data.<which>` value; `split` is `data.<which>_split` (None
    when not given). Raises ValueError naming `key` for a malformed value."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{key} is empty; expected a hub id, a local path or a mapping")
        return DataSource(value, split or default_split, key=key)
    if not isinstance(value, dict):
        raise ValueError(
            f"{key} must be a string or a mapping {{path, name, split, columns}}, "
            f"got {type(value).__name__}"
        )
    unknown = sorted(set(value) - set(MAPPING_KEYS))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; valid keys: {list(MAPPING_KEYS)}")
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{key}.path is required: a hub id or a local file or folder")
    for sub in ("name", "split"):
        if value.get(sub) is not None and not isinstance(value[sub], str):
            raise ValueError(f"{key}.{sub} must be a string, got {value[sub]!r}")
    if value.get("split") is not None and split is not None:
        raise ValueError(
            f"{key}.split ({value['split']!r}) and {key}_split ({split!r}) both give the split: "
            "keep one"
        )
    columns = value.get("columns") or {}
    if not isinstance(columns, dict):
        raise ValueError(f"{key}.columns must be a mapping {{our field: its column}}")
    for ours, theirs in columns.items():
        if ours not in FIELDS:
            raise ValueError(f"{key}.columns: unknown field {ours!r}; valid fields: {list(FIELDS)}")
        if not isinstance(theirs, str) or not theirs:
            raise ValueError(f"{key}.columns.{ours} must be a column name, got {theirs!r}")
    return DataSource(path, value.get("split") or split or default_split, value.get("name"),
                      dict(columns), key)
