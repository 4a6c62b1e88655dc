"""Where rows come from: any hub dataset by id (the paper's four also by alias), local
JSONL / JSON / CSV / Parquet / Arrow files, `save_to_disk` folders, hub-layout folders of
shards, in-memory `datasets.Dataset`s or lists of dicts; a scenario's `DataSource` adds the
dataset's config name and a column mapping.

Rows are read as they are: typing, checking and templating happen in `validation`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from raydaa.config.data_source import DataSource
from raydaa.data.errors import DataSourceError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".feather")
EXPECTED = (
    "a local file (.jsonl, .json, .csv, .parquet, .arrow), a `save_to_disk` folder, a folder "
    "of data shards in the hub's layout (e.g. data/train-00000-of-00001.parquet), or a hub "
    "dataset id"
)


@dataclass(frozen=True)
class PublicDataset:
    """A dataset of the paper, loaded from the hub by `datasets.load_dataset`."""

    path: str
    kind: str  # "sft" or "preference"
    splits: dict[str, str]  # our split name ("train" / "test") -> the hub's split name
    max_length: int  # the paper's sequence length for this data


PUBLIC_DATASETS = {
    "ultrafeedback": PublicDataset(
        "HuggingFaceH4/ultrafeedback_binarized", "preference", {"train": "train_prefs", "test": "test_prefs"}, 4096),
    "ultrachat": PublicDataset(
        "HuggingFaceH4/ultrachat_200k", "sft", {"train": "train_sft", "test": "test_sft"}, 4096),
    "tldr": PublicDataset("trl-lib/tldr", "sft", {"train": "train", "test": "validation"}, 1024),
    "tldr-preference": PublicDataset(
        "trl-lib/tldr-preference", "preference", {"train": "train", "test": "validation"}, 1024),
}


def public_dataset(name: str) -> PublicDataset | None:
    """The public dataset called `name` (short alias or hub path), or None."""
    return PUBLIC_DATASETS.get(name) or next((d for d in PUBLIC_DATASETS.values() if d.path == name), None)


class Unparsable(str):
    """A JSONL line that did not parse (kept to be reported, not to be used)."""


def _read_json_lines(path: Path) -> list[Any]:
    """Raw Python rows, read before any Arrow typing so wrong types stay visible
    (Arrow would refuse a column mixing str and int). A file that opens with "[" is
    read as one JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(Unparsable(line))
    return rows


def _read_arrow(path: Path) -> datasets.Dataset:
    """An Arrow IPC stream (what `datasets` writes) or IPC file (Feather v2)."""
    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(source).read_all()
    return datasets.Dataset(table)


def _read_csv(path: Path) -> datasets.Dataset:
    """A CSV file, every column read as text: CSV has no types, and every field we use is
    text (a column of numbers would otherwise arrive as int64)."""
    table = pa_csv.read_csv(path)
    return datasets.Dataset(table.cast(pa.schema([(n, pa.string()) for n in table.column_names])))


def _read_file(path: Path) -> Sequence[Any]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_json_lines(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return datasets.Dataset(pq.read_table(path))
    if suffix in (".arrow", ".feather"):
        return _read_arrow(path)
    raise DataSourceError(f"{path}: unsupported extension {suffix!r}; expected {EXPECTED}")


def _take(rows: Sequence[Any], split: str, splits: dict[str, int], label: str) -> Sequence[Any]:
    """The rows a split spec selects: a bare name as it is, a sliced one (`train[:90%]`,
    `train[-200:]`, `train[:50%]+train[80%:]`, the `datasets` split syntax, parsed by it)
    as those rows of `rows`, whose splits (name -> rows) are `splits`."""
    if "[" not in split:
        return rows
    try:
        parts = datasets.ReadInstruction.from_spec(split).to_absolute(splits)
    except (ValueError, AssertionError) as err:
        raise DataSourceError(
            f"{label}: split {split!r}: {err}; expected a split name, optionally sliced as "
            f"`datasets` reads it (e.g. train[:90%], train[90%:], train[:1000]); its splits: "
            f"{sorted(splits)}"
        ) from None
    index = [i for part in parts for i in range(part.from_, part.to)]
    if isinstance(rows, datasets.Dataset):
        return rows.select(index)
    return [rows[i] for i in index]


def _split_name(split: str) -> str:
    """`train` of `train[:90%]`."""
    return split.split("[", 1)[0].split("+", 1)[0]


def _read_folder(path: Path, split: str, name: str | None) -> datasets.Dataset:
    """A `save_to_disk` folder (it has dataset_dict.json or state.json), else a folder of
    shards in the hub's layout, read as `load_dataset` reads a hub repository."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if not isinstance(loaded, datasets.DatasetDict):
            return _take(loaded, split, {_split_name(split): len(loaded)}, str(path))
        whole = _split_name(split)
        if whole not in loaded:
            raise DataSourceError(f"{path}: no split {split!r}; its splits: {sorted(loaded)}")
        return _take(loaded[whole], split, {whole: len(loaded[whole])}, str(path))
    try:
        return datasets.load_dataset(str(path), name=name, split=split)
    except (ValueError, FileNotFoundError) as err:  # no data files, unknown split or config
        raise DataSourceError(
            f"{path}: cannot read split {split!r} of this folder ({err}); expected {EXPECTED}"
        ) from None


def _label(path: Path, split: str) -> str:
    return f"{path}[{split}]" if "[" in split else str(path)


def _looks_local(source: str) -> bool:
    """A path rather than a hub id: a file suffix, or an absolute / relative / home path."""
    return Path(source).suffix.lower() in FILE_SUFFIXES or source.startswith(("/", ".", "~"))


def _read(source: str | Path, split: str, name: str | None) -> tuple[Sequence[Any], str]:
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, split, name), str(path)
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataSourceError(f"{path}: the file is empty (no rows)")
        # one file is one split, `train` (as `datasets` names it): a bare split name reads
        # it whole, a sliced one (train[90%:]) those rows, e.g. to hold out a validation set
        rows = _read_file(path)
        return _take(rows, split, {"train": len(rows)}, str(path)), _label(path, split)
    if isinstance(source, Path) or _looks_local(source):
        raise DataSourceError(f"{path} does not exist; expected {EXPECTED}")
    spec = public_dataset(source)
    hub_id, hub_split = (spec.path, spec.splits.get(split, split)) if spec else (source, split)
    label = f"{hub_id}[{hub_split}]"
    try:
        return datasets.load_dataset(hub_id, name=name, split=hub_split), label
    except (OSError, ValueError) as err:  # offline, unknown id / config / split
        raise DataSourceError(
            f"{source} is not a local file or folder, and the hub dataset {label} cannot be "
            f"loaded ({str(err).splitlines()[0]}); expected {EXPECTED}"
        ) from None


def column_names(rows: Sequence[Any]) -> list[str]:
    """Column names of a Dataset, or the keys seen in any row of a list (in first-seen order)."""
    if isinstance(rows, datasets.Dataset):
        return list(rows.column_names)
    return list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))


def rename_columns(rows: Sequence[Any], columns: dict[str, str], label: str) -> Sequence[Any]:
    """Rows with each mapped column renamed to our field ({our field: its column}).

    Raises DataSourceError naming the source, the mapped column and the columns it has."""
    present = column_names(rows)
    renames = {theirs: ours for ours, theirs in columns.items() if theirs != ours}
    for ours, theirs in columns.items():
        if theirs not in present:
            raise DataSourceError(
                f"{label}: columns.{ours} maps to column {theirs!r}, which it does not have; "
                f"its columns: {present}"
            )
        if ours != theirs and ours in present and ours not in renames:
            raise DataSourceError(
                f"{label}: columns.{ours} maps to column {theirs!r}, but it also has a column "
                f"{ours!r}; map that one elsewhere or drop it (its columns: {present})"
            )
    if not renames:
        return rows
    if isinstance(rows, datasets.Dataset):
        return rows.rename_columns(renames)
    return [{renames.get(k, k): v for k, v in row.items()} if isinstance(row, dict) else row
            for row in rows]


def load_rows(source: str | Path | DataSource | datasets.Dataset | Sequence[dict], split: str = "train",
              *, name: str | None = None, columns: dict[str, str] | None = None,
              ) -> tuple[Sequence[Any], str]:
    """(rows, source name) of a scenario's `DataSource`, a local file or folder, a hub
    dataset (alias or id; `split` is "train"/"test" for the paper's datasets, else the hub's
    own split name; `name` its config), an in-memory `Dataset` or a list of dicts.

    `columns` ({our field: its column}) renames before anything else looks at the rows.
    Raises DataSourceError for a missing or empty source or a bad mapping; a `DataSource`'s
    errors start with its scenario key (e.g. "data.preference").
    """
    if isinstance(source, DataSource):
        try:
            return _load(resolve_source(source.path), source.split, source.name, source.columns,
                         source.path)
        except DataSourceError as err:
            raise DataSourceError(f"{source.key}: {err}" if source.key else str(err)) from None
    return _load(source, split, name, columns)


def _load(source, split: str, name: str | None, columns: dict[str, str] | None,
          label: str | None = None) -> tuple[Sequence[Any], str]:
    if isinstance(source, datasets.Dataset):
        rows, label = source, label or source.info.dataset_name or "<in-memory dataset>"
    elif not isinstance(source, str | Path):
        rows, label = list(source), "<in-memory rows>"
    else:
        rows, label = _read(source, split, name)
    if len(rows) == 0:
        raise DataSourceError(f"{label}: no rows (an empty file or split)")
    return (rename_columns(rows, columns, label) if columns else rows), label


def resolve_source(source: str | DataSource, split: str | None = None):
    """A built-in scenario's dataset (raydaa.scenarios) for `tiny:<split>`; anything else
    is returned as it is, for `load_rows`."""
    from raydaa.scenarios.assets import builtin_dataset

    path = source.path if isinstance(source, DataSource) else source
    dataset = builtin_dataset(path) if isinstance(path, str) else None
    return source if dataset is None else dataset
