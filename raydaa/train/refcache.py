"""Reference log-probs computed once per (reference checkpoint, data) and shared by trials.

The reference policy's per-sequence log-probs of the preference data depend on neither β,
nor lr, nor λ: a sweep needs them once, not once per trial. We store the sum and the token
count of each completion (both normalizations derive from them) in one Parquet file per
key, under `<storage>/refcache/`, where `storage` is a local path or any URI pyarrow's
filesystems read (s3://, gs://, a mounted NFS path), so every node of a cluster reads the
same file and no trial ever holds or runs a reference model.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from raydaa.config.defaults import DEFAULT_BATCH_TOKENS
from raydaa.config.scenario import WatchdogConfig
from raydaa.core.logprobs import SequenceLogps, concatenated_forward
from raydaa.data.token_batches import in_original_order, token_batches
from raydaa.io import storage
from raydaa.io.memory import peak_rss_mib
from raydaa.train import phases
from raydaa.train.watchdog import Limits, RunWatch, WatchdogTimeout

COLUMNS = ("index", "chosen_logp_sum", "chosen_count", "rejected_logp_sum", "rejected_count")
SCHEMA = pa.schema([("index", pa.int64())] + [(name, pa.float64()) for name in COLUMNS[1:]])
_SAMPLE_BYTES = 1 << 20  # bytes read from each end of a checkpoint file for its fingerprint
PROGRESS_METRICS = (  # (key, name, kind, description, tags, when): raydaa.sweep.telemetry
    ("scored", "raydaa_refcache_pairs_scored", "gauge",
     "Preference pairs the reference has scored so far for the cache being computed",
     ("reference",), "every second while the cache is computed, by the process computing it"),
    ("total", "raydaa_refcache_pairs_total", "gauge",
     "Preference pairs the cache being computed holds when done", ("reference",),
     "as raydaa_refcache_pairs_scored"),
)


def checkpoint_fingerprint(directory: str | Path) -> str:
    """A cheap content key for an HF checkpoint directory (a storage path: directory or
    URI): every file's name, size and its first and last MiB. Hashing a whole 16 GB 8B
    checkpoint would take minutes; a retrained checkpoint changes sizes or the bytes at
    either end of its weight files."""
    fs, root = storage.filesystem(directory)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = sorted(
        ((i.path[len(root) :].lstrip("/"), i) for i in infos if i.type == pafs.FileType.File),
        key=lambda item: item[0].split("/"),  # the order of sorted(Path.rglob()) before
    )
    if not files:
        raise FileNotFoundError(f"reference checkpoint {directory} has no files")
    h = hashlib.sha256()
    for relative, info in files:
        h.update(f"{relative}:{info.size}".encode())
        with fs.open_input_file(info.path) as f:
            h.update(f.read_at(min(_SAMPLE_BYTES, info.size), 0))
            if info.size > 2 * _SAMPLE_BYTES:
                h.update(f.read_at(_SAMPLE_BYTES, info.size - _SAMPLE_BYTES))
    return h.hexdigest()


def cache_key(reference_fingerprint: str, data_fingerprint: str) -> str:
    """The data fingerprint already covers tokens, max length and template."""
    return hashlib.sha256(f"{reference_fingerprint}:{data_fingerprint}".encode()).hexdigest()[:32]


def cache_uri(root: str, key: str) -> str:
    return storage.join(root, "refcache", f"{key}.parquet")


def pair_tokens(row: dict) -> int:
    """What a preference row costs in a scoring batch: chosen and rejected are padded to
    one length and run as one (2B, T) forward, so 2 x its longer sequence."""
    return 2 * max(len(row["chosen_input_ids"]), len(row["rejected_input_ids"]))


def _score_shard(
    reference_dir: str,
    rows: list[dict],
    pad_token_id: int,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    beacon=None,
) -> pa.Table:
    """Reference log-probs of `rows` (tokenized preference rows), in float32, one table
    row per input row in their order; pairs of similar length are scored together, at most
    `batch_tokens` tokens (padding included) per forward. `beacon`
    (raydaa.train.phases.Beacon) hears the phase and the rows scored so far."""
    from transformers import AutoModelForCausalLM

    from raydaa.data.collators import PreferenceCollator

    if beacon is not None:
        beacon.phase(phases.MODEL_LOAD, f"reference {reference_dir}")
    local = storage.local_copy(reference_dir)  # a URI is copied to this node once
    model = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")  # a task given a GPU uses it
    collate = PreferenceCollator(pad_token_id)
    batches = token_batches([pair_tokens(r) for r in rows], batch_tokens)
    scored: list[list[tuple]] = []  # per batch, one (index, sums and counts) tuple per row
    done = 0
    with torch.no_grad():
        for picked in batches:
            batch = collate([rows[i] for i in picked])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            chosen, rejected = concatenated_forward(model, batch, pad_token_id)
            columns = (
                batch["index"].cpu().tolist(),
                chosen.sum.double().tolist(),
                chosen.count.double().tolist(),
                rejected.sum.double().tolist(),
                rejected.count.double().tolist(),
            )
            scored.append(list(zip(*columns, strict=True)))
            done += len(picked)
            if beacon is not None:
                beacon.stepped(done, len(rows))
    if beacon is not None:
        beacon.close()
    ordered = in_original_order(batches, scored)  # the rows' own order again
    out = {name: [r[k] for r in ordered] for k, name in enumerate(COLUMNS)}
    return pa.table(out, schema=SCHEMA)


@functools.cache
def _progress_gauges() -> dict:
    from ray.util.metrics import Gauge  # created on first use, in the computing process

    return {key: Gauge(name, text, tag_keys=tags)
            for key, name, _, text, tags, _ in PROGRESS_METRICS}


def _progress(reference_dir, scored: int, total: int) -> None:
    """The live progress gauges (`raydaa dashboard`'s reference-cache panel), both set
    each time: Ray stops exporting a gauge not set for ~20 s."""
    gauges, tags = _progress_gauges(), {"reference": str(reference_dir)}
    gauges["total"].set(float(total), tags=tags)
    gauges["scored"].set(float(scored), tags=tags)


def compute_reference_logps(
    reference_dir: str | Path,
    dataset,
    *,
    pad_token_id: int,
    num_workers: int = 2,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    use_gpu: bool = False,
    limits: Limits | None = None,
    say=print,
) -> pa.Table:
    """Score every row of a tokenized preference `datasets.Dataset` with the reference,
    in `num_workers` Ray tasks over contiguous shards (one reference forward per row),
    each forward at most `batch_tokens` tokens (`resources.batch_tokens`; `pair_tokens`).
    Progress is printed through `say`, the last line with the largest peak resident
    memory of the scoring tasks; a shard that scores no batch within
    `limits.startup_s`, or no further batch within `limits.stall_s`, stops the whole
    computation with WatchdogTimeout (its tasks cancelled), naming the phase it was in."""
    import ray

    rows = dataset.to_list()
    if not rows:
        raise ValueError("no preference rows to score")
    num_workers = max(1, min(num_workers, len(rows)))
    bounds = [len(rows) * i // num_workers for i in range(num_workers + 1)]
    token = f"refcache-{uuid.uuid4().hex[:16]}"

    @ray.remote(num_cpus=1)
    def score(shard: list[dict], who: str) -> tuple[pa.Table, float]:
        torch.set_num_threads(1)  # one task per core
        beacon = phases.beacon(token, who)
        table = _score_shard(str(reference_dir), shard, pad_token_id, batch_tokens, beacon)
        return table, peak_rss_mib()  # the task's peak resident memory, MiB

    # on GPU clusters each shard takes one GPU: scoring an 8B reference on CPUs takes hours
    gpus = 1 if use_gpu else 0
    who = [f"shard{i}" for i in range(num_workers)]
    pending = [  # named for the dashboard's task views: which pairs each task scores
        score.options(num_gpus=gpus, name=f"reference cache: pairs {a}-{b} of {len(rows)}")
        .remote(rows[a:b], w) for a, b, w in zip(bounds[:-1], bounds[1:], who, strict=True)
    ]
    refs = list(pending)
    if limits is None:  # the scenario's defaults
        default = WatchdogConfig()
        limits = Limits(default.startup_timeout_s, default.stall_timeout_s)
    watch = RunWatch(limits, who, started=time.monotonic())
    say(f"reference cache: scoring {len(rows)} pairs in {num_workers} Ray tasks ...")
    _progress(reference_dir, 0, len(rows))
    last_line, start = 0.0, time.monotonic()
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            records = phases.read(token)
            verdict = watch.observe(records, time.monotonic())
            if verdict:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise WatchdogTimeout(f"reference cache: {verdict}")
            done = sum(int(r.get("step") or 0) for r in records.values())
            _progress(reference_dir, done, len(rows))
            if pending and time.monotonic() - last_line > 15:
                say(f"reference cache: {done}/{len(rows)} pairs scored "
                    f"({time.monotonic() - start:.0f} s)")
                last_line = time.monotonic()
        scored = ray.get(refs)
        peak = max(p for _, p in scored)
        _progress(reference_dir, len(rows), len(rows))
        say(f"reference cache: {len(rows)}/{len(rows)} pairs scored "
            f"({time.monotonic() - start:.0f} s; largest peak RSS of a scoring task "
            f"{peak:,.0f} MiB)")
        return pa.concat_tables([t for t, _ in scored]).sort_by("index")
    finally:
        phases.clear(token)


def ensure_reference_cache(
    reference_dir: str | Path,
    prepared,
    root: str,
    *,
    pad_token_id: int,
    num_workers: int = 2,
    use_gpu: bool = False,
    limits: Limits | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> str:
    """The cache URI for (reference, data), computing and writing it only if it is missing.
    `prepared` is a `raydaa.data.tokenize.Prepared` preference set (its fingerprint keys the
    file; `batch_tokens` only sizes the scoring batches, so it is not part of the key)."""
    key = cache_key(checkpoint_fingerprint(reference_dir), prepared.fingerprint)
    uri = cache_uri(root, key)
    fs, path = storage.filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        table = compute_reference_logps(
            reference_dir,
            prepared.dataset,
            pad_token_id=pad_token_id,
            num_workers=num_workers,
            use_gpu=use_gpu,
            limits=limits,
            batch_tokens=batch_tokens,
        )
        storage.write_table(uri, table)
    return uri


@dataclass
class ReferenceLogps:
    """The cache in memory: row index -> the reference's (sum, count) for both completions."""

    chosen: SequenceLogps  # each field (N,), float64, ordered by row position
    rejected: SequenceLogps
    position: dict[int, int]  # row index -> position

    @classmethod
    def load(cls, uri: str) -> ReferenceLogps:
        fs, path = storage.filesystem(uri)
        table = pq.read_table(path, filesystem=fs)
        missing = set(COLUMNS) - set(table.column_names)
        if missing:
            raise ValueError(f"reference cache {uri} lacks columns {sorted(missing)}")
        col = {name: torch.from_numpy(table.column(name).to_numpy().copy()) for name in COLUMNS}
        return cls(
            chosen=SequenceLogps(col["chosen_logp_sum"], col["chosen_count"]),
            rejected=SequenceLogps(col["rejected_logp_sum"], col["rejected_count"]),
            position={int(i): p for p, i in enumerate(col["index"].tolist())},
        )

    def lookup(self, index: torch.Tensor) -> tuple[SequenceLogps, SequenceLogps]:
        """(chosen, rejected) for a batch's row indices, shape (B,) each."""
        try:
            pos = torch.tensor([self.position[int(i)] for i in index.tolist()])
        except KeyError as err:
            raise KeyError(
                f"row index {err.args[0]} is not in the reference cache: "
                "the cache was built for other data"
            ) from None
        pick = lambda s: SequenceLogps(s.sum[pos], s.count[pos])  # noqa: E731
        return pick(self.chosen), pick(self.rejected)
