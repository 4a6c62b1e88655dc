"""Where rows come from: the paper's public datasets by hub name, local JSONL / JSON /
Parquet / Arrow files, `save_to_disk` folders, in-memory `datasets.Dataset`s or lists of dicts.

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
import pyarrow.parquet as pq


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


def load_rows(source: str | Path | datasets.Dataset | Sequence[dict], split: str = "train",
              ) -> tuple[Sequence[Any], str]:
    """(rows, source name) of a local file, a `save_to_disk` folder, a public dataset
    (alias or hub name; `split` is "train"/"test" or the hub's own split name), an
    in-memory `Dataset` or a list of dicts."""
    if isinstance(source, datasets.Dataset):
        return source, source.info.dataset_name or "<in-memory dataset>"
    if not isinstance(source, str | Path):
        return list(source), "<in-memory rows>"
    path = Path(source)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return (loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded), str(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return _read_json_lines(path), str(path)
        if suffix == ".parquet":
            return datasets.Dataset(pq.read_table(path)), str(path)
        if suffix in (".arrow", ".feather"):
            return _read_arrow(path), str(path)
        raise ValueError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .parquet or .arrow")
    spec = public_dataset(str(source))
    if spec is None:
        raise FileNotFoundError(
            f"{source}: neither a local file nor a known dataset ({', '.join(PUBLIC_DATASETS)})")
    hub_split = spec.splits.get(split, split)
    return datasets.load_dataset(spec.path, split=hub_split), f"{spec.path}[{hub_split}]"


def resolve_source(source: str, split: str):
    """A built-in scenario's dataset (raydaa.scenarios); anything else is passed to
    raydaa.data as it is."""
    from raydaa.scenarios.assets import builtin_dataset

    dataset = builtin_dataset(source)
    return source if dataset is None else dataset
