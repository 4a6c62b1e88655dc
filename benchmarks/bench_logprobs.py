"""Peak memory and time of per-sequence log-probs: full (B, T, V) logits vs raydaa's chunks.

Two ways to get log π(y|x) per sequence from a causal LM's final hidden states (B, T, H)
and its LM head (V x H), both in `raydaa.core.logprobs`:

- full: `sequence_logps(head(hidden), labels)`: the (B, T, V) logits exist at once (in
  bf16 plus their float32 copy when the model runs in bf16), as with `model(...).logits`;
- chunked: `hidden_sequence_logps(hidden, labels, head, V, chunk_elements=...)`: the
  scored positions go through the head `chunk_elements // V` tokens at a time, with a
  hand-written backward that recomputes each chunk's logits (what `model_sequence_logps`
  does after the model's forward).

Measured per variant, each in a fresh Python subprocess (one per variant; `--quick` runs
all its small variants in one): build the inputs (hidden states, head, labels, and for
training preallocated gradients of both), then per call reset the peak RSS
(`/proc/self/clear_refs` <- "5" resets VmHWM) and record VmHWM - VmRSS-before-the-call (the
call's extra peak memory), wall time (`time.perf_counter`) and the process's CPU time
(`time.process_time`: with one torch thread, much less sensitive to other jobs on a shared
machine). One warm-up call, then `--repeats` timed calls; times are medians, the extra
peak the maximum over the timed calls. Modes: "score" (no grad: the reference cache's and
KL's case) and "train" (forward + backward of the summed log-probs). Values: the full and
the chunked child of the same configuration build bit-identical inputs (same seed); each
dumps its per-sequence sums and (train) gradients, and the parent compares them.

    python benchmarks/bench_logprobs.py --json /tmp/bench_logprobs.json   # ~2 h on 2 idle cores
    python benchmarks/bench_logprobs.py --quick --json /tmp/q.json          # ~25 CPU-seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA3_VOCAB = 128_256
SECTIONS = ("main", "realistic", "batch4", "vocab", "chunk")
GIB = 1 << 30
MIB = 1 << 20


# --------------------------------------------------------------------------- variants


def full_config(args) -> dict:
    """Shapes of a real run: T = 4096, Llama-3's vocabulary, tiny hidden size."""
    return {
        "T": args.seq_len,
        "V": LLAMA3_VOCAB,
        "H": args.hidden,
        "vocab_sweep": [32_000, LLAMA3_VOCAB, 256_000],
        "chunk_sweep": [1 << 22, 1 << 23, 1 << 24, 1 << 25, 1 << 26, 1 << 27],
        "default_chunk": None,  # the library's DEFAULT_CHUNK_ELEMENTS
    }


def quick_config(args) -> dict:
    """Small enough for seconds; a chunk holds 32 of the 510 scored tokens at V = 4096."""
    return {
        "T": 256,
        "V": 4096,
        "H": 16,
        "vocab_sweep": [2048, 4096, 8192],
        "chunk_sweep": [1 << 16, 1 << 17, 1 << 18],
        "default_chunk": 1 << 17,
    }


def variants(cfg: dict, sections: list[str]) -> list[dict]:
    """Every variant, each a dict of what its child needs; `name` is unique."""
    T, V, H, chunk = cfg["T"], cfg["V"], cfg["H"], cfg["default_chunk"]
    out: list[dict] = []

    def add(section, path, mode, dtype, B=2, vocab=V, scored=1.0, chunk_elements=chunk):
        spec = {
            "section": section,
            "path": path,
            "mode": mode,
            "dtype": dtype,
            "B": B,
            "T": T,
            "V": vocab,
            "H": H,
            "scored": scored,
            "chunk_elements": chunk_elements if path == "chunked" else None,
        }
        spec["name"] = variant_name(spec)
        out.append(spec)

    both = ("full", "chunked")
    if "main" in sections:  # one preference pair, every position scored (chunks' worst case)
        for dtype in ("fp32", "bf16"):
            for mode in ("score", "train"):
                for path in both:
                    add("main", path, mode, dtype)
    if "realistic" in sections:  # the last 10% of the positions are completion tokens
        for mode in ("score", "train"):
            for path in both:
                add("realistic", path, mode, "fp32", scored=0.1)
    if "batch4" in sections:
        for mode in ("score", "train"):
            for path in both:
                add("batch4", path, mode, "fp32", B=4)
    if "vocab" in sections:  # chunked at every V (the main rows hold V itself); full at small V
        for vocab in cfg["vocab_sweep"]:
            if vocab == V:
                continue
            for mode in ("score", "train"):
                add("vocab", "chunked", mode, "fp32", vocab=vocab)
                if vocab < V:
                    add("vocab", "full", mode, "fp32", vocab=vocab)
    if "chunk" in sections:  # chunk sizes other than the default (the main rows hold it)
        default = cfg["default_chunk"] or _library_default_chunk()
        for elements in cfg["chunk_sweep"]:
            if elements == default:
                continue
            for mode in ("score", "train"):
                add("chunk", "chunked", mode, "fp32", chunk_elements=elements)
    return out


def variant_name(spec: dict) -> str:
    name = f"{spec['path']}-{spec['mode']}-{spec['dtype']}-B{spec['B']}-T{spec['T']}-V{spec['V']}"
    if spec["scored"] < 1:
        name += f"-scored{spec['scored']:g}"
    if spec["chunk_elements"] is not None:
        name += f"-chunk{spec['chunk_elements']}"
    return name


def _library_default_chunk() -> int:
    from raydaa.core.logprobs import DEFAULT_CHUNK_ELEMENTS

    return DEFAULT_CHUNK_ELEMENTS


def reference_name(spec: dict) -> str | None:
    """The full-path variant whose values a chunked variant must reproduce."""
    if spec["path"] != "chunked":
        return None
    return variant_name({**spec, "path": "full", "chunk_elements": None})


# --------------------------------------------------------------------------- child side


def _proc_status(key: str) -> int:
    """A `/proc/self/status` memory line (kB) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    """VmHWM := VmRSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_child(spec: dict, dump: str | None) -> dict:
    import torch

    from raydaa.core.logprobs import (
        DEFAULT_CHUNK_ELEMENTS,
        IGNORE_INDEX,
        hidden_sequence_logps,
        sequence_logps,
    )

    torch.set_num_threads(spec["threads"])
    B, T, V, H = spec["B"], spec["T"], spec["V"], spec["H"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    chunk_elements = spec["chunk_elements"] or DEFAULT_CHUNK_ELEMENTS
    train = spec["mode"] == "train"

    # Inputs: drawn in float32 from one seed in one order, then cast, so that the full and
    # the chunked child (and the fp32 and bf16 ones) start from the same numbers. Logits
    # ~ N(0, 2^2) per entry; labels uniform over the vocabulary.
    gen = torch.Generator().manual_seed(spec["seed"])
    hidden = torch.randn(B, T, H, generator=gen).to(dtype)
    head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=gen) * (2.0 / math.sqrt(H)))
    head = head.to(dtype)
    labels = torch.randint(0, V, (B, T), generator=gen)
    completion = max(1, round(spec["scored"] * T))
    labels[:, : T - completion] = IGNORE_INDEX
    head.weight.requires_grad_(train)
    if train:  # gradients preallocated (as an optimizer holds them): inputs, not extra
        hidden.requires_grad_(True)
        hidden.grad = torch.zeros_like(hidden)
        head.weight.grad = torch.zeros_like(head.weight)

    def call():
        with torch.set_grad_enabled(train):
            if spec["path"] == "full":
                logps = sequence_logps(head(hidden), labels)
            else:
                logps = hidden_sequence_logps(
                    hidden, labels, head, V, chunk_elements=chunk_elements
                )
            if train:
                logps.sum.sum().backward()
        return logps.sum.detach()

    gc.collect()
    rss_inputs = _proc_status("VmRSS")
    calls = []
    sums = None
    for _ in range(spec["warmup"] + spec["repeats"]):
        if train:
            hidden.grad.zero_()
            head.weight.grad.zero_()
        sums = None
        gc.collect()
        rss = _proc_status("VmRSS")
        _reset_peak()
        if _proc_status("VmHWM") > rss + 4 * MIB:
            raise RuntimeError("writing 5 to /proc/self/clear_refs did not reset VmHWM")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        sums = call()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        calls.append(
            {"wall_s": wall, "cpu_s": cpu, "extra_bytes": _proc_status("VmHWM") - rss, "rss": rss}
        )
    timed = calls[spec["warmup"] :]
    scored_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
    result = {
        **spec,
        "chunk_elements": chunk_elements if spec["path"] == "chunked" else None,
        "tokens_per_chunk": max(1, chunk_elements // V) if spec["path"] == "chunked" else None,
        "scored_tokens": scored_tokens,
        "wall_s": statistics.median(c["wall_s"] for c in timed),
        "cpu_s": statistics.median(c["cpu_s"] for c in timed),
        "extra_bytes": max(c["extra_bytes"] for c in timed),
        "cold_extra_bytes": calls[0]["extra_bytes"],
        # the same peak against the RSS right after the inputs were built: also counts
        # what earlier calls left allocated (malloc's heap, lazily built thread pools)
        "extra_vs_inputs_bytes": max(c["rss"] + c["extra_bytes"] for c in timed) - rss_inputs,
        "rss_inputs_bytes": rss_inputs,
        "calls": calls,
        "logits_fp32_bytes": B * T * V * 4,
        "chunk_fp32_bytes": max(1, chunk_elements // V) * V * 4,
        "values": [float(v) for v in sums],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if dump:
        state = {"sums": sums.float()}
        if train:
            state["grad_hidden"] = hidden.grad.float()
            state["grad_weight"] = head.weight.grad.float()
        torch.save(state, dump)
    return result


def child_main(spec_file: str) -> None:
    """Run the variants listed in `spec_file` in this process, one JSON line each."""
    jobs = json.loads(Path(spec_file).read_text())
    for job in jobs:
        result = run_child(job["spec"], job.get("dump"))
        print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent side


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def mem_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def predicted_extra(spec: dict) -> int:
    """The full path's extra peak, in bytes, to skip what cannot fit: measured here (T=512)
    at 2.0x the float32 logits when scoring and 4.0x in training, fp32 and bf16 alike; the
    chunked path stays under ~1 GiB at any size benchmarked."""
    if spec["path"] == "chunked":
        return GIB
    factor = 2.1 if spec["mode"] == "score" else 4.1
    return int(factor * spec["B"] * spec["T"] * spec["V"] * 4)


def run_jobs(
    specs: list[dict], tmp: Path, timeout: float, exact_malloc: bool = False
) -> list[dict]:
    """One subprocess for `specs` (one spec per call in the full benchmark)."""
    jobs = [{"spec": s, "dump": str(tmp / f"{s['name']}.pt")} for s in specs]
    spec_file = tmp / f"spec-{specs[0]['name']}.json"
    spec_file.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(exact_malloc),
    )
    results = [
        json.loads(line[len("RESULT ") :])
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if proc.returncode != 0 or len(results) != len(specs):
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"child for {specs[0]['name']} failed (rc {proc.returncode}):\n{tail}")
    return results


def _child_env(exact_malloc: bool) -> dict:
    env = dict(os.environ)
    if exact_malloc:
        # glibc: blocks of 64 KiB and more are mmap'ed and unmapped on free, and the heap's
        # free top is returned at once, so a call's small temporaries show in VmHWM instead
        # of reusing memory a previous call left (glibc's default raises its mmap threshold
        # up to 32 MiB after frees and keeps up to twice that at the heap's top)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env["MALLOC_TRIM_THRESHOLD_"] = "0"
        env["MALLOC_TOP_PAD_"] = "0"
    return env


def compare(rows: list[dict], dumps: Path) -> list[dict]:
    """Each chunked variant against the full variant of the same configuration (their
    dumps in `dumps`, possibly from an earlier run with the same `--dumps`)."""
    import torch

    out = []
    for row in rows:
        ref = reference_name(row)
        if ref is None or not (dumps / f"{ref}.pt").exists():
            continue
        a = torch.load(dumps / f"{ref}.pt")
        b = torch.load(dumps / f"{row['name']}.pt")
        entry = {"chunked": row["name"], "full": ref, "dtype": row["dtype"], "mode": row["mode"]}
        for key in ("sums", "grad_hidden", "grad_weight"):
            if key not in a:
                continue
            diff = (a[key] - b[key]).abs().max().item()
            scale = a[key].abs().max().item()
            entry[f"{key}_max_abs_diff"] = diff
            entry[f"{key}_max_rel_diff"] = diff / scale if scale else diff
        out.append(entry)
    return out


# max |chunked - full| / max |full| per compared tensor. bf16 gradients: the full path's
# weight gradient is one bf16 matmul over every token, the chunked path's a float32 sum of
# one matmul per chunk rounded to bf16 once; the two roundings differ, hence the looser bound.
TOLERANCE = {
    "fp32": {"sums": 1e-5, "grad_hidden": 1e-5, "grad_weight": 1e-5},
    "bf16": {"sums": 1e-5, "grad_hidden": 1e-2, "grad_weight": 5e-2},
}


def agreement_ok(entry: dict) -> bool:
    tol = TOLERANCE[entry["dtype"]]
    return all(
        math.isfinite(entry[f"{key}_max_rel_diff"]) and entry[f"{key}_max_rel_diff"] <= bound
        for key, bound in tol.items()
        if f"{key}_max_rel_diff" in entry
    )


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        pass
    import torch

    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
    }


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.0f} MiB" if n >= 10 * MIB else f"{n / 1024:.0f} KiB"


def table(rows: list[dict], skipped: list[dict], agreement: list[dict]) -> str:
    """Markdown. "extra peak": max over the timed calls of VmHWM - VmRSS before the call;
    "over inputs": the same peak against the RSS right after the inputs were built, so it
    also holds what earlier calls left allocated (glibc's heap, lazy imports)."""
    by_name = {r["name"]: r for r in rows}
    agree = {a["chunked"]: a for a in agreement}
    lines = [
        "| section | mode | dtype | B | V | scored | path | chunk (tokens) | extra peak | "
        "over inputs | fp32 logits | fp32 logits / extra peak | wall s (median) | "
        "CPU s (median) | chunked / full wall | chunked / full CPU | max rel diff vs full |",
        "|---" * 17 + "|",
    ]
    for r in rows:
        ref = by_name.get(reference_name(r) or "")
        ratio_wall = f"{r['wall_s'] / ref['wall_s']:.2f}" if ref else ""
        ratio_cpu = f"{r['cpu_s'] / ref['cpu_s']:.2f}" if ref else ""
        a = agree.get(r["name"])
        diff = max(v for k, v in a.items() if k.endswith("_max_rel_diff")) if a else None
        chunk = (
            f"2^{int(math.log2(r['chunk_elements']))} ({r['tokens_per_chunk']})"
            if r["chunk_elements"]
            else ""
        )
        extra = r["extra_bytes"]
        ratio = f"{r['logits_fp32_bytes'] / extra:.1f}x" if extra >= MIB else "n/a"
        lines.append(
            f"| {r['section']} | {r['mode']} | {r['dtype']} | {r['B']} | {r['V']:,} | "
            f"{r['scored']:g} | {r['path']} | {chunk} | {fmt_bytes(extra)} | "
            f"{fmt_bytes(r['extra_vs_inputs_bytes'])} | {fmt_bytes(r['logits_fp32_bytes'])} | "
            f"{ratio} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {ratio_wall} | {ratio_cpu} | "
            f"{'' if diff is None else f'{diff:.1e}'} |"
        )
    for s in skipped:
        lines.append(
            f"| {s['section']} | {s['mode']} | {s['dtype']} | {s['B']} | {s['V']:,} | "
            f"{s['scored']:g} | {s['path']} | | skipped: {s['reason']} | | | | | | | | |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=256, V<=8192, H=16: seconds")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--only", nargs="+", help="run only the variants with these names")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument(
        "--modes", nargs="+", choices=("score", "train"), default=["score", "train"]
    )
    parser.add_argument("--hidden", type=int, default=64, help="hidden size H (full mode)")
    parser.add_argument("--seq-len", type=int, default=4096, help="T (full mode)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="3 (--quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="per child, seconds")
    parser.add_argument(
        "--margin-gib",
        type=float,
        default=4.0,
        help="skip a variant whose predicted peak leaves less memory free",
    )
    parser.add_argument(
        "--wait-mem",
        type=float,
        default=0,
        help="seconds to wait for that memory before skipping the variant",
    )
    parser.add_argument(
        "--exact-malloc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="children mmap every block >= 64 KiB and trim the heap at once "
        "(default: on with --quick, whose tensors are small; else glibc's own)",
    )
    parser.add_argument(
        "--dumps",
        help="keep each variant's values and gradients here "
        "(default: a temporary folder), so later runs compare against them",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="print one table from earlier runs' --json files (values "
        "compared again when --dumps names their dumps)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    cfg = quick_config(args) if args.quick else full_config(args)
    if args.exact_malloc is None:
        args.exact_malloc = args.quick
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    specs = variants(cfg, args.sections)
    if args.only:
        specs = [s for s in specs if s["name"] in args.only]
    specs = [s for s in specs if s["dtype"] in args.dtypes and s["mode"] in args.modes]
    common = {
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    specs = [{**s, **common} for s in specs]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    command = "python " + " ".join(["benchmarks/bench_logprobs.py", *(argv or sys.argv[1:])])
    rows: list[dict] = []
    skipped: list[dict] = []
    agreement: list[dict] = []
    report = {
        "started": started,
        "command": command,
        "machine": machine_info(),
        "quick": args.quick,
        "exact_malloc": args.exact_malloc,
        "config": {
            **cfg,
            **common,
            "default_chunk": cfg["default_chunk"] or _library_default_chunk(),
        },
        "tolerance": TOLERANCE,
        "rows": rows,
        "skipped": skipped,
        "agreement": agreement,
    }

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    if args.merge:  # several earlier runs' JSON into one table; later runs win per variant
        merged: dict[str, dict] = {}
        merged_skips: dict[str, dict] = {}
        merged_agreement: dict[str, dict] = {}
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            for row in part["rows"]:
                merged[row["name"]] = {**row, "run": part["started"]}
                merged_skips.pop(row["name"], None)
            for skip in part["skipped"]:
                if skip["name"] not in merged:
                    merged_skips[skip["name"]] = skip
            merged_agreement.update({a["chunked"]: a for a in part["agreement"]})
        order = {name: i for i, name in enumerate(s["name"] for s in variants(cfg, SECTIONS))}
        rows += sorted(merged.values(), key=lambda r: order.get(r["name"], len(order)))
        skipped += merged_skips.values()
        agreement += [merged_agreement[r["name"]] for r in rows if r["name"] in merged_agreement]
        report["command"] = [json.loads(Path(p).read_text())["command"] for p in args.merge]
        report["merged"] = args.merge
    with tempfile.TemporaryDirectory(prefix="bench_logprobs_") as tmp_dir:
        tmp = Path(args.dumps or tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.merge:
            pass
        elif args.quick:  # one process for all: import torch once
            rows += run_jobs(specs, tmp, args.timeout, args.exact_malloc)
        else:
            for spec in specs:
                need = predicted_extra(spec) + args.margin_gib * GIB
                deadline = time.monotonic() + args.wait_mem
                while need > mem_available() and need < mem_total() and time.monotonic() < deadline:
                    time.sleep(10)  # other jobs' memory may come back
                if need > mem_available():
                    reason = (
                        f"needs ~{fmt_bytes(need)} with margin, "
                        f"{fmt_bytes(mem_available())} available"
                    )
                    skipped.append({**spec, "reason": reason})
                    print(f"skip {spec['name']}: {reason}", flush=True)
                    continue
                t0 = time.perf_counter()
                (row,) = run_jobs([spec], tmp, args.timeout, args.exact_malloc)
                rows.append(row)
                save()
                print(
                    f"{row['name']}: extra {fmt_bytes(row['extra_bytes'])}, "
                    f"wall {row['wall_s']:.2f} s, CPU {row['cpu_s']:.2f} s "
                    f"({time.perf_counter() - t0:.0f} s with start-up)",
                    flush=True,
                )
        if not args.merge or args.dumps:
            agreement[:] = compare(rows, tmp)
    for a in agreement:
        a["ok"] = agreement_ok(a)
    save()
    print()
    print(table(rows, skipped, agreement))
    m = report["machine"]
    print(
        f"\n{m['cpu']}, nproc {m['nproc']}, torch {m['torch']}, {args.threads} torch "
        f"thread(s); extra peak = max over the timed calls of VmHWM - VmRSS before the "
        f"call; times = medians of the timed calls after the warm-up."
    )
    for a in agreement:
        print(
            f"values {a['chunked']} vs full: "
            + ", ".join(f"{k} {v:.2e}" for k, v in a.items() if k.endswith("_max_rel_diff"))
        )
    bad = [a for a in agreement if not a["ok"]]
    if bad:
        print(f"\nVALUES DISAGREE: {[a['chunked'] for a in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
