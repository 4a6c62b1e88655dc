"""benchmarks/bench_logprobs.py --quick: every variant measured, and the chunked log-probs
equal the full-logits ones (~18 s on 2 idle cores, 2-3 min on a loaded machine)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_logprobs.py"
_spec = importlib.util.spec_from_file_location("bench_logprobs", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_measures_every_variant_and_values_agree(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # the JSON first (it is written even when values disagree), the exit status last
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    expected = {s["name"] for s in bench.variants(bench.quick_config(None), list(bench.SECTIONS))}
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == expected and not report["skipped"]
    for name, row in rows.items():
        for key in ("extra_bytes", "wall_s", "cpu_s", "logits_fp32_bytes", "scored_tokens"):
            assert _positive(row[key]), (name, key, row[key])
        assert all(_positive(c["wall_s"]) for c in row["calls"]), name
        assert len(row["values"]) == row["B"]
        assert all(math.isfinite(v) and v < 0 for v in row["values"]), (name, row["values"])

    # Values: every chunked variant against the full variant of the same inputs, from the
    # JSON's own numbers (per-sequence sums) and the parent's comparison (sums, gradients)
    agreement = {a["chunked"]: a for a in report["agreement"]}
    chunked = [r for r in rows.values() if r["path"] == "chunked"]
    with_reference = [r for r in chunked if bench.reference_name(r) in rows]
    assert len(with_reference) == len(chunked) - 2  # V above the main V: no full row
    for row in with_reference:
        full = rows[bench.reference_name(row)]
        scale = max(abs(v) for v in full["values"])
        diff = max(abs(a - b) for a, b in zip(row["values"], full["values"], strict=True))
        assert diff <= 1e-5 * scale, (row["name"], row["values"], full["values"])
        entry = agreement[row["name"]]
        assert entry["ok"], entry
        keys = {"sums", "grad_hidden", "grad_weight"} if row["mode"] == "train" else {"sums"}
        assert {k[: -len("_max_rel_diff")] for k in entry if k.endswith("_max_rel_diff")} == keys
        # the memory the benchmark exists for: no (B, T, V) logits on the chunked path
        assert row["extra_bytes"] < full["extra_bytes"], (row["name"], full["name"])
    for row in rows.values():
        if row["path"] == "full":  # the float32 logits (or bf16 + float32 copy) existed
            assert row["extra_bytes"] >= row["logits_fp32_bytes"], row["name"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
