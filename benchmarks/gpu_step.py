"""DPO training-step throughput and MFU of a ~1.1B random-init Llama under DeepSpeed ZeRO-2
and ZeRO-3, bf16, sdpa and (when installed) flash_attention_2, on one GPU.

    python benchmarks/gpu_step.py [--out raydaa_results/gpu_step.json]   # one GPU, ~3-6 min
    python benchmarks/gpu_step.py --smoke                               # tiny, CPU, ~1 min

The step is raydaa's: `raydaa.core.logprobs.concatenated_forward` (chosen + rejected as one
batch) -> `raydaa.core.losses.preference_loss("dpo", ...)` -> engine.backward -> engine.step,
with the reference log-probs computed once before training (as raydaa's reference cache
does), so the timed step has no reference forward. The reference forward is timed apart.

FLOPs (PaLM, Chowdhery et al. 2022, App. B), per step, tokens = 2 · pairs · seq_len:
    train      6 · N · tokens + 12 · L · d · T · tokens      (forward + backward)
    reference  2 · N · tokens +  4 · L · d · T · tokens      (forward only, timed apart)
N = parameters that take part in matmuls: all but the input embedding (a lookup); the
untied lm_head counts. L layers, d = heads · head_dim, T = seq_len. The attention term
counts the full T × T score matrix (no causal halving), as PaLM does; 12·L·d·T is ~8% of
6·N at T = 1024 here. MFU = train FLOPs / step time / peak dense bf16 FLOPs of the GPU
(by name: H100 SXM and H200 989e12, H100 PCIe 756e12, H100 NVL 835e12, A100 312e12;
`--peak-tflops` overrides). The optimizer step, the loss and the float32 log-softmax are
not counted as model FLOPs (they are in the time).

Each configuration runs in its own Python process (a single-rank torch.distributed group
via env://), so engines, ZeRO-3 hooks and CUDA memory never leak from one into the next.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def llama_config(self, max_positions: int):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            pad_token_id=0,
        )


SHAPE_1B = ModelShape(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=32000)
SHAPE_SMOKE = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256)


def parameter_count(s: ModelShape) -> dict[str, int]:
    """Llama (no biases, untied lm_head): per layer q, k, v, o, gate/up/down and 2 RMSNorms."""
    q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
    attention = s.hidden * q_dim + 2 * s.hidden * kv_dim + q_dim * s.hidden
    mlp = 3 * s.hidden * s.intermediate
    per_layer = attention + mlp + 2 * s.hidden
    embedding = s.vocab * s.hidden
    lm_head = s.hidden * s.vocab
    total = embedding + s.layers * per_layer + s.hidden + lm_head
    return {
        "total": total,
        "embedding": embedding,
        "per_layer": per_layer,
        "lm_head": lm_head,
        "matmul": total - embedding,
    }


def step_flops(s: ModelShape, tokens: int, seq_len: int) -> dict[str, float]:
    """Model FLOPs of one training step and of one reference forward over `tokens`."""
    n = parameter_count(s)["matmul"]
    attention_per_token = s.layers * s.heads * s.head_dim * seq_len  # L · d · T
    return {
        "train": 6 * n * tokens + 12 * attention_per_token * tokens,
        "reference_forward": 2 * n * tokens + 4 * attention_per_token * tokens,
    }


# Dense bf16 tensor-core peak, from NVIDIA's datasheets; checked in this order (substring of
# torch.cuda.get_device_name()).
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16:
        if key in device_name:
            return value
    return None


# --- one configuration, in its own process --------------------------------------------------


def make_batches(shape: ModelShape, pairs: int, seq_len: int, prompt_len: int, n: int, seed: int):
    """n preference batches of random tokens, no padding; labels -100 on the prompt."""
    import torch

    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        prompt = torch.randint(1, shape.vocab, (pairs, prompt_len), generator=g)
        batch = {}
        for side in ("chosen", "rejected"):
            completion = torch.randint(1, shape.vocab, (pairs, seq_len - prompt_len), generator=g)
            ids = torch.cat([prompt, completion], dim=1)
            labels = ids.clone()
            labels[:, :prompt_len] = -100
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = torch.ones_like(ids)
            batch[f"{side}_labels"] = labels
        batches.append(batch)
    return batches


def deepspeed_config(zero: int, pairs: int, bf16: bool, lr: float) -> dict[str, Any]:
    zero_opt: dict[str, Any] = {"stage": zero}
    return {
        "train_batch_size": pairs,
        "train_micro_batch_size_per_gpu": pairs,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        # torch.optim.AdamW (foreach), as raydaa's default: no JIT-built FusedAdam needed.
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": lr,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": 0.0,
                "torch_adam": True,
            },
        },
        "bf16": {"enabled": bf16},
        "zero_optimization": zero_opt,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build, warm up and time one (zero, attention) configuration; returns its record."""
    import deepspeed
    import torch

    from raydaa.core.logprobs import concatenated_forward
    from raydaa.core.losses import preference_loss

    shape = ModelShape(**cfg["shape"])
    use_cuda = cfg["device"] == "cuda"
    if use_cuda:
        torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    ds_config = deepspeed_config(cfg["zero"], cfg["pairs"], cfg["bf16"], cfg["lr"])
    dtype = torch.bfloat16 if cfg["bf16"] else torch.float32
    config = shape.llama_config(cfg["seq_len"])
    torch.manual_seed(cfg["seed"])
    t_build = time.perf_counter()
    keep_alive = None
    if cfg["zero"] == 3:
        # Makes from_config build under deepspeed.zero.Init (partitioned at creation).
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=cfg["attn"]
        )
    else:
        from transformers import AutoModelForCausalLM

        with torch.device(cfg["device"]):  # initialise on the GPU: seconds, not a minute
            model = AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=cfg["attn"]
            )
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=list(model.parameters()), config=ds_config
    )
    build_s = time.perf_counter() - t_build
    device = engine.device
    batches = [
        {k: v.to(device) for k, v in b.items()}
        for b in make_batches(
            shape, cfg["pairs"], cfg["seq_len"], cfg["prompt_len"], cfg["n_batches"], cfg["seed"]
        )
    ]
    tokens = 2 * cfg["pairs"] * cfg["seq_len"]

    def sync():
        if use_cuda:
            torch.cuda.synchronize()

    # Reference log-probs once per batch, from the initial weights (raydaa's reference cache
    # does this once per scenario); the first pass warms up, the others are timed.
    engine.eval()
    refs = []
    with torch.no_grad():
        concatenated_forward(engine, batches[0])
        sync()
        t0 = time.perf_counter()
        for b in batches:
            chosen, rejected = concatenated_forward(engine, b)
            refs.append((chosen.reduce(cfg["normalize"]), rejected.reduce(cfg["normalize"])))
        sync()
        ref_s = (time.perf_counter() - t0) / len(batches)
    engine.train()

    step_times, losses = [], []
    for step in range(cfg["warmup"] + cfg["steps"]):
        b = batches[step % len(batches)]
        ref_chosen, ref_rejected = refs[step % len(batches)]
        sync()
        t0 = time.perf_counter()
        chosen, rejected = concatenated_forward(engine, b)
        out = preference_loss(
            "dpo",
            chosen.reduce(cfg["normalize"]),
            rejected.reduce(cfg["normalize"]),
            ref_chosen,
            ref_rejected,
            beta=cfg["beta"],
        )
        loss = out.losses.mean()
        engine.backward(loss)
        engine.step()
        sync()
        step_times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    timed = step_times[cfg["warmup"] :]
    step_s = sum(timed) / len(timed)
    flops = step_flops(shape, tokens, cfg["seq_len"])
    peak = cfg["peak_flops"]
    record = {
        "status": "ok",
        "parameters": n_params,
        "build_and_init_s": build_s,
        "tokens_per_step": tokens,
        "step_s_mean": step_s,
        "step_s_min": min(timed),
        "step_s_max": max(timed),
        "tokens_per_s": tokens / step_s,
        "train_flops_per_step": flops["train"],
        "achieved_tflops": flops["train"] / step_s / 1e12,
        "mfu": flops["train"] / step_s / peak if peak else None,
        "reference_forward_s": ref_s,
        "reference_tokens_per_s": tokens / ref_s,
        "reference_mfu": flops["reference_forward"] / ref_s / peak if peak else None,
        # Policy = reference at step 0, so DPO's first loss is -log σ(0) = ln 2.
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if use_cuda else None,
    }
    del keep_alive
    return record


# --- the driver --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_subprocess(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = os.environ | {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :]) | {"process_wall_s": wall}
    tail = (proc.stderr or proc.stdout)[-3000:]
    return {"status": "failed", "reason": f"exit {proc.returncode}: {tail}", "process_wall_s": wall}


def flash_attention_unavailable(device: str) -> str | None:
    """Why flash_attention_2 cannot run here, or None when it can."""
    if device != "cuda":
        return "flash_attention_2 needs a CUDA GPU"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "the flash-attn package is not installed (pip install flash-attn)"
    return None


def device_info(smoke: bool) -> tuple[str, str]:
    import torch

    if smoke:
        return "cpu", "CPU (smoke mode)"
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run on a GPU machine, or use --smoke on a CPU")
    return "cuda", torch.cuda.get_device_name(0)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def render(report: dict[str, Any]) -> str:
    lines = [
        f"device: {report['device_name']}; model: {report['parameters']:,} parameters "
        f"({report['shape']}); {report['pairs']} pairs × 2 × {report['seq_len']} tokens per step; "
        f"peak {_fmt(report['peak_flops'] and report['peak_flops'] / 1e12, '.0f')} TFLOPS",
        "",
        "| ZeRO | attention | status | step s | tokens/s | TFLOPS | MFU | ref fwd tokens/s | "
        "first loss | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    for r in report["runs"]:
        if r["status"] != "ok":
            lines.append(
                f"| {r['zero']} | {r['attn']} | {r['status']}: {r['reason'][:120]} |  |  |  |  |  |  |  |"
            )
            continue
        lines.append(
            f"| {r['zero']} | {r['attn']} | ok | {r['step_s_mean']:.3f} | {r['tokens_per_s']:,.0f} | "
            f"{r['achieved_tflops']:.1f} | {_fmt(r['mfu'], '.1%')} | "
            f"{r['reference_tokens_per_s']:,.0f} | {r['first_loss']:.6f} | "
            f"{_fmt(r['peak_memory_gib'], '.1f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, CPU, fp32, ZeRO-2")
    parser.add_argument("--out", default="raydaa_results/gpu_step.json", help="JSON report path")
    parser.add_argument("--zero", type=int, nargs="+", choices=(2, 3), default=None)
    parser.add_argument("--attn", nargs="+", choices=("sdpa", "flash_attention_2"), default=None)
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs per step")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the GPU peak")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args(argv)

    if args.one:
        record = run_one(json.loads(args.one))
        print("RESULT " + json.dumps(record), flush=True)
        return 0

    smoke = args.smoke
    defaults = (
        dict(pairs=2, seq_len=32, prompt_len=8, warmup=1, steps=2, timeout=240.0)
        if smoke
        else dict(pairs=4, seq_len=1024, prompt_len=256, warmup=5, steps=20, timeout=150.0)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 < args.prompt_len < args.seq_len or args.pairs < 1 or args.steps < 1:
        parser.error("need 0 < --prompt-len < --seq-len, --pairs >= 1 and --steps >= 1")
    zeros = args.zero or ([2] if smoke else [2, 3])
    attns = args.attn or (["sdpa"] if smoke else ["sdpa", "flash_attention_2"])
    shape = SHAPE_SMOKE if smoke else SHAPE_1B
    device, device_name = device_info(smoke)
    peak = (
        args.peak_tflops * 1e12
        if args.peak_tflops
        else (None if smoke else peak_flops(device_name))
    )
    counts = parameter_count(shape)
    print(f"device: {device_name}", flush=True)
    print(
        f"model: Llama {asdict(shape)}: {counts['total']:,} parameters "
        f"({counts['matmul']:,} in matmuls, {counts['embedding']:,} input embedding)",
        flush=True,
    )
    if peak is None:
        print(f"peak bf16 FLOPs unknown for {device_name!r}: MFU not reported (--peak-tflops)")
    report: dict[str, Any] = {
        "device_name": device_name,
        "smoke": smoke,
        "shape": asdict(shape),
        "parameters": counts["total"],
        "parameter_breakdown": counts,
        "pairs": args.pairs,
        "seq_len": args.seq_len,
        "prompt_len": args.prompt_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "peak_flops": peak,
        "flops_formula": "train 6*N*tokens + 12*L*d*T*tokens; reference fwd 2*N*tokens + "
        "4*L*d*T*tokens; N = params without input embedding; reference excluded from the step",
        "runs": [],
    }
    flash_reason = flash_attention_unavailable(device)
    for attn in attns:
        for zero in zeros:
            base = {"zero": zero, "attn": attn}
            if attn == "flash_attention_2" and flash_reason:
                print(f"skip ZeRO-{zero} + flash_attention_2: {flash_reason}", flush=True)
                report["runs"].append(base | {"status": "skipped", "reason": flash_reason})
                continue
            cfg = base | {
                "shape": asdict(shape),
                "device": device,
                "bf16": not smoke,
                "pairs": args.pairs,
                "seq_len": args.seq_len,
                "prompt_len": args.prompt_len,
                "warmup": args.warmup,
                "steps": args.steps,
                "n_batches": 4,
                "beta": args.beta,
                "lr": args.lr,
                "normalize": True,
                "seed": 0,
                "peak_flops": peak,
            }
            print(f"running ZeRO-{zero} + {attn} ...", flush=True)
            record = base | run_in_subprocess(cfg, args.timeout)
            report["runs"].append(record)
            if record["status"] == "ok":
                print(
                    f"  {record['tokens_per_s']:,.0f} tokens/s, {record['step_s_mean']:.3f} s/step, "
                    f"MFU {_fmt(record['mfu'], '.1%')}, "
                    f"first loss {record['first_loss']:.6f} (ln 2 = {math.log(2):.6f}), "
                    f"process {record['process_wall_s']:.0f} s",
                    flush=True,
                )
            else:
                print(f"  failed: {record['reason'][-500:]}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print("\n" + render(report) + f"\n\nwrote {out}")
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
