"""Storage paths every node can use: a directory (local or NFS) or s3:// (a real S3 server,
moto, over HTTP). The results store under concurrent writers: every row exactly once."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pyarrow.fs as pafs
import pytest

from raydaa.io import storage
from raydaa.io.results_store import read_store, store_root, write_row


@pytest.fixture
def root(storage_root):
    """A fresh storage root of each kind (conftest.py)."""
    return storage_root


def every_file(path: str) -> list[str]:
    """All files under a storage path, dot-files included (list_files hides those)."""
    fs, inner = storage.filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def test_resolve_accepts_directories_and_object_stores_only(tmp_path):
    assert storage.resolve("s3://bucket/results/") == "s3://bucket/results"
    assert storage.resolve(f"file://{tmp_path}/r") == str(tmp_path / "r")
    assert storage.resolve("relative/dir") == os.path.abspath("relative/dir")
    with pytest.raises(ValueError, match="unsupported storage URI 'hdfs://nn/x'.*s3://"):
        storage.resolve("hdfs://nn/x")
    with pytest.raises(ValueError, match="query string.*AWS_ENDPOINT_URL"):
        storage.resolve("s3://b/x?endpoint_override=localhost:9000")


def test_text_files_round_trip_and_listing_hides_temporaries(root):
    storage.write_text(storage.join(root, "a", "reference.json"), '{"path": "x"}')
    storage.write_text(storage.join(root, "a", "b", "c.txt"), "c")
    storage.write_text(storage.join(root, "a", ".d.tmp"), "in flight")
    assert storage.read_text(storage.join(root, "a", "reference.json")) == '{"path": "x"}'
    assert storage.read_text(storage.join(root, "missing.json")) is None
    assert storage.exists(storage.join(root, "a", "b", "c.txt"))
    assert storage.list_files(storage.join(root, "a")) == [
        storage.join(root, "a", "b", "c.txt"),
        storage.join(root, "a", "reference.json"),
    ]
    assert storage.list_files(storage.join(root, "nothing-here")) == []


def test_local_copy_is_the_directory_or_a_cached_copy(root, tmp_path, monkeypatch):
    """A directory is used in place (it is shared); an object-store prefix is copied once
    per node, and copied anew when its files change."""
    monkeypatch.setenv("RAYDAA_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    target = storage.upload_dir(source, storage.join(root, "model"))
    first = storage.local_copy(target)
    if storage.is_uri(root):
        assert first.startswith(str(tmp_path / "cache"))
    else:
        assert first == target
    assert (tmp_path / "model" / "sub" / "weights.bin").read_bytes() == (
        open(os.path.join(first, "sub", "weights.bin"), "rb").read()
    )
    assert storage.local_copy(target) == first  # cached
    (source / "config.json").write_text('{"changed": 1}')
    storage.upload_dir(source, target)
    second = storage.local_copy(target)
    assert open(os.path.join(second, "config.json")).read() == '{"changed": 1}'
    assert sorted(os.listdir(second)) == ["config.json", "sub"]


WRITERS, THREADS, ROWS, SHARED = 3, 6, 4, 3


def write_rows(root: str, writer: int) -> None:
    """THREADS threads, each writing ROWS rows of its own plus every SHARED row; a shared
    row carries its writer in two columns, so a torn or mixed row would show."""

    def thread(t: int) -> None:
        me = writer * THREADS + t
        for k in range(ROWS):
            write_row(root, "tiny", {"trial_id": f"w{me}-{k}", "method": "dpo", "beta": me})
        for k in range(SHARED):
            row = {"trial_id": f"shared-{k}", "method": "dpo", "beta": me, "error": f"by {me}"}
            write_row(root, "tiny", row)

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def test_concurrent_writers_lose_no_row_and_leave_no_temporary(root):
    """3 processes x 6 threads: 3*6*4 = 72 own rows + 3 rows all 18 threads rewrite
    -> exactly 75 rows, each trial id once, each shared row whole from one writer."""
    with ProcessPoolExecutor(WRITERS, mp_context=get_context("spawn")) as pool:
        list(pool.map(write_rows, [root] * WRITERS, range(WRITERS)))
    rows = read_store(root, "tiny").to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)) == WRITERS * THREADS * ROWS + SHARED
    for r in rows:
        if r["trial_id"].startswith("shared-"):
            assert r["error"] == f"by {int(r['beta'])}"
        else:
            assert r["trial_id"].startswith(f"w{int(r['beta'])}-")
    files = every_file(store_root(root, "tiny"))
    assert len(files) == len(rows) and all(f.endswith(".parquet") for f in files)
