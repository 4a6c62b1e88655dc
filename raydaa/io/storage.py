"""Where a sweep's files live, seen the same from every node: a local or shared (NFS/EFS)
directory, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix).

Every path handed to a trial is a storage path (an absolute directory or a URI), never a
node-local one. Small files (results-store rows, reference.json, the reference cache,
baseline samples) are read and written through pyarrow.fs on both kinds. Model
directories (the SFT checkpoint, trained policies, tokenized data) that transformers and
datasets can only open from disk are copied once per node into a local cache by
`local_copy`, keyed by the URI and the listing of its files.

Object stores: S3 credentials and region come from the usual AWS variables or the instance
profile (AWS_ENDPOINT_URL points at another S3 server); GCS from Application Default
Credentials.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMES = ("s3", "gs", "gcs")
"""Object stores pyarrow.fs opens by URI."""


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def resolve(path: str | Path) -> str:
    """The storage root in the form every node can use: an absolute directory, or the URI.
    Unknown schemes are refused here, before any trial starts."""
    path = str(path)
    if not is_uri(path):
        return str(Path(path).resolve())
    scheme = path.split("://", 1)[0].lower()
    if scheme == "file":
        return str(Path(path.split("://", 1)[1]).resolve())
    if scheme not in SCHEMES:
        raise ValueError(
            f"unsupported storage URI {path!r}: use a directory (local, or NFS/EFS shared by "
            f"all nodes), s3://bucket/prefix or gs://bucket/prefix"
        )
    if "?" in path:
        raise ValueError(
            f"storage URI {path!r} has a query string; set endpoints and credentials through "
            "the environment instead (AWS_ENDPOINT_URL, AWS_PROFILE, ...), so paths can be joined"
        )
    return path.rstrip("/")


def join(base: str | Path, *parts: str) -> str:
    base = str(base)
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def filesystem(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a storage path."""
    path = str(path)
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    scheme, rest = path.split("://", 1)
    bucket = rest.split("/", 1)[0]
    return _bucket_filesystem(scheme, bucket, os.environ.get("AWS_ENDPOINT_URL")), rest.rstrip("/")


@functools.lru_cache(maxsize=16)
def _bucket_filesystem(scheme: str, bucket: str, endpoint: str | None) -> pafs.FileSystem:
    # One per bucket (and endpoint) and process: from_uri asks S3 for the bucket's region.
    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def exists(path: str | Path) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def read_text(path: str | Path) -> str | None:
    """The file's text, or None if there is no such file."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as f:
        return f.read().decode()


def write_bytes(path: str | Path, data: bytes | str) -> str:
    """The one atomic writer: a reader (a browser, another trial, a report rebuild) sees the
    old file or the new one, never half of either. A directory gets a unique temporary
    file in the target's folder, flushed to disk and renamed into place (atomic on POSIX
    and NFS; two writers of one path both leave a complete file); an object store
    publishes an object only once its upload completes, so it is written directly."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fs, inner = filesystem(path)
    parent, name = inner.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    if is_uri(path):
        with fs.open_output_stream(inner) as f:
            f.write(payload)
        return str(path)
    tmp = Path(parent) / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, inner)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return inner


def write_text(path: str | Path, text: str) -> str:
    return write_bytes(path, text)


def write_table(path: str | Path, table: pa.Table) -> str:
    """A table as one Parquet file, through the atomic writer."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return write_bytes(path, buffer.getvalue().to_pybytes())


def list_files(directory: str | Path, suffix: str = "") -> list[str]:
    """Storage paths of the files under `directory` (recursive) ending in `suffix`, sorted;
    dot-files (temporaries of writers in flight) are left out."""
    fs, inner = filesystem(directory)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    rel = sorted(
        i.path[len(inner) :].lstrip("/")
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(suffix)
        and not i.base_name.startswith(".")
    )
    return [join(directory, r) for r in rel]


def upload_dir(local: str | Path, destination: str | Path) -> str:
    """Copy a local directory to a storage path (replacing what was there); returns it."""
    destination = str(destination)
    if is_uri(destination):
        fs, inner = filesystem(destination)
        fs.delete_dir_contents(inner, missing_dir_ok=True)
        pafs.copy_files(
            str(local), inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
        )
        return destination
    tmp = f"{destination}.{uuid.uuid4().hex}.tmp"
    shutil.copytree(local, tmp)
    shutil.rmtree(destination, ignore_errors=True)
    os.rename(tmp, destination)
    return destination


def remove_dir(path: str | Path) -> None:
    """Delete a storage directory and everything under it (nothing if it is not there)."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir(inner)


def upload_files(local: str | Path, destination: str | Path) -> None:
    """Copy a local directory's files into a storage directory, keeping what is there."""
    fs, inner = filesystem(destination)
    pafs.copy_files(
        str(local), inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )


def cache_root() -> Path:
    """Node-local cache of copied model directories ($RAYDAA_CACHE or ~/.cache/raydaa)."""
    return Path(os.environ.get("RAYDAA_CACHE", Path.home() / ".cache" / "raydaa")) / "storage"


def local_copy(path: str | Path) -> str:
    """A local directory with the content of the storage directory `path`: the path itself
    when it is a (shared) directory, else a per-node cached copy of the object-store
    prefix. The cache key covers every file's name, size and modification time, so a
    rewritten prefix is copied anew; concurrent callers each copy to a temporary name and
    the first rename wins."""
    if not is_uri(path):
        return str(path)
    fs, inner = filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    files = sorted((i.path, i.size, str(i.mtime)) for i in infos if i.type == pafs.FileType.File)
    if not files:
        raise FileNotFoundError(f"{path} holds no files")
    key = hashlib.sha256(repr((str(path), files)).encode()).hexdigest()[:24]
    target = cache_root() / key
    if target.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    pafs.copy_files(
        inner, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    try:
        os.rename(tmp, target)
    except OSError:  # another process of this node finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
