"""DPO training step, reference scoring and sampling of random-init Llamas under DeepSpeed
ZeRO-2 and ZeRO-3, bf16, sdpa and (when installed) flash_attention_2, on one GPU: tokens/s,
MFU and peak GPU memory per stage.

    python benchmarks/gpu_step.py [--out raydaa_results/gpu_step.json]   # one GPU, ~2-7 min
    python benchmarks/gpu_step.py --smoke                               # tiny, CPU, ~1 min

Two suites, each run as ZeRO-2 and ZeRO-3 × sdpa and flash_attention_2:
- `rehearsal`: the shapes of the paper's main scenario (Llama 3.1 8B on UltraFeedback) at
  ~1B width: Llama-3.2-1B's body (hidden 2048, 16 layers, 32 heads, 8 KV heads,
  intermediate 8192) with Llama-3's 128,256-token vocabulary and an untied lm_head like the
  8B's: 1,498,482,688 parameters (1,235,814,400 in matmuls). One pair (2 sequences of
  4096 tokens, prompt 512) per micro batch, gradient checkpointing on, as the 8B recipe.
- `step`: the earlier ~1.1B shape (same body, 32,000-token vocabulary: 1,104,218,112
  parameters), 4 pairs × 2 × 1024 tokens (prompt 256), no gradient checkpointing.

Stages, in this order, each with peak memory (torch.cuda.max_memory_allocated, reset before
the stage; on the CPU the process's peak RSS, reset through /proc/self/clear_refs):
- reference: raydaa's reference-cache work, `concatenated_forward` under torch.no_grad on
  the initial weights, once per batch (1 warm-up + 4 timed forwards);
- train: raydaa's DPO step, `raydaa.core.logprobs.concatenated_forward` (chosen + rejected
  as one batch) -> `raydaa.core.losses.preference_loss("dpo", ...)` against the reference
  log-probs above -> engine.backward -> engine.step (no reference forward in the step);
- sampling: `model.generate` with the KV cache on 4 left-padded random prompts (rehearsal:
  1024/1536/2048/3072 tokens, 256 new; step: 256/384/512/768, 128 new), the paper's Table 8
  sampling (T 0.9, top-k 40), never stopping early (min_new_tokens = max_new_tokens). One
  short warm-up generate, two prefill-only ones (1 new token; the faster is `prefill_s`), one
  timed full generate.

Model FLOPs (PaLM, Chowdhery et al. 2022, App. B), tokens = 2 · pairs · seq_len, S = scored
(completion) tokens, the ones whose log-prob is taken:
    reference  F = 2 · N_body · tokens + 2 · N_head · S + 4 · L · d · T · tokens
    train      3 · F  (forward + backward)
    sampling   Σ_prompts 2 · N_body · (P + n - 1) + 2 · N_head · n
                         + 4 · L · d · (P² + (n - 1) · P + n(n - 1)/2)
N_body = parameters that take part in matmuls except the lm_head (the input embedding is
a lookup), N_head = V · d_model; raydaa's chunked log-probs apply the head to the scored
positions only. L layers, d = heads · head_dim, T = seq_len; attention without causal
halving, as PaLM. Recomputation (gradient checkpointing, the checkpointed log-prob chunks),
the optimizer step, the loss and float32 log-softmax are in the time, not in the FLOPs.
MFU = FLOPs / time / peak dense bf16 FLOPs of the GPU (by name: H100 SXM and H200 989e12,
H100 PCIe 756e12, H100 NVL 835e12, A100 312e12; `--peak-tflops` overrides).

Time budget, H100 SXM at an assumed 40% MFU (396 TFLOP/s): rehearsal training step
7.2e13 FLOPs ≈ 0.18 s, reference forward 2.4e13 ≈ 0.06 s, prefill of the 4 prompts 1.7e13
(2.9e13 with the left padding) ≈ 0.07 s; step suite: training step 5.4e13 ≈ 0.14 s,
reference forward 1.8e13 ≈ 0.05 s. All the FLOP work of one configuration, warm-ups
included, is ~2 s. The rest is not FLOP-bound (estimates, not measured): ~15-30 s per
process (imports, NCCL, model init, deepspeed.initialize, the first steps' allocations)
and decoding at ~25 ms per token (launch-bound: 256 tokens ≈ 7 s), a few times slower
under ZeRO-3, whose hooks gather and free every module's weights for every token. So
~25-60 s per configuration: ~2-4 min for the four sdpa ones, ~4-7 min with flash-attn's
four. `--budget-s` (default 540) starts no configuration once the run has used its
budget and cuts the last one's timeout to what is left; the rehearsal suite runs first,
and the JSON is rewritten after every configuration, so a killed run keeps its rows. A
stage that fails (an OOM, say) records its error and peak memory and the next stages run;
a configuration that dies or times out keeps the stages it finished.

Each configuration runs in its own Python process (a single-rank torch.distributed group
via env://), so engines, ZeRO-3 hooks and CUDA memory never leak from one into the next.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GIB = 2**30
STAGES = ("reference", "train", "sampling")


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
            bos_token_id=1,
            eos_token_id=2,
        )


SHAPE_1B = ModelShape(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=32000)
# Llama-3.2-1B's body with Llama-3's vocabulary and an untied head (Llama 3.1 8B unties it).
SHAPE_REHEARSAL = replace(SHAPE_1B, vocab=128_256)
SHAPE_SMOKE = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256)
SHAPE_SMOKE_REHEARSAL = replace(SHAPE_SMOKE, intermediate=256, vocab=1024)


@dataclass(frozen=True)
class Suite:
    """One workload: a model shape, a preference batch and a sampling batch."""

    name: str
    shape: ModelShape
    pairs: int  # preference pairs per micro batch (= optimizer step here)
    seq_len: int  # tokens per sequence, prompt included, no padding
    prompt_len: int  # labels -100 on the prompt: scored tokens = seq_len - prompt_len
    gradient_checkpointing: bool
    warmup: int  # untimed training steps
    steps: int  # timed training steps
    sample_prompt_lens: tuple[int, ...]  # one prompt each, left-padded to the longest
    new_tokens: int  # generated per prompt, never stopping early
    n_batches: int = 4  # distinct preference batches, cycled through; one reference each

    @property
    def tokens(self) -> int:
        return 2 * self.pairs * self.seq_len

    @property
    def scored_tokens(self) -> int:
        return 2 * self.pairs * (self.seq_len - self.prompt_len)

    @property
    def max_positions(self) -> int:
        return max(self.seq_len, max(self.sample_prompt_lens) + self.new_tokens)


SUITES = {
    "rehearsal": Suite(
        "rehearsal",
        SHAPE_REHEARSAL,
        pairs=1,
        seq_len=4096,
        prompt_len=512,
        gradient_checkpointing=True,
        warmup=2,
        steps=5,
        sample_prompt_lens=(1024, 1536, 2048, 3072),
        new_tokens=256,
    ),
    "step": Suite(
        "step",
        SHAPE_1B,
        pairs=4,
        seq_len=1024,
        prompt_len=256,
        gradient_checkpointing=False,
        warmup=3,
        steps=10,
        sample_prompt_lens=(256, 384, 512, 768),
        new_tokens=128,
    ),
}
# The same code paths at tiny widths, for the CPU (--smoke).
SMOKE_SUITES = {
    "rehearsal": replace(
        SUITES["rehearsal"],
        shape=SHAPE_SMOKE_REHEARSAL,
        seq_len=64,
        prompt_len=16,
        warmup=1,
        steps=2,
        sample_prompt_lens=(16, 24, 32, 48),
        new_tokens=16,
    ),
    "step": replace(
        SUITES["step"],
        shape=SHAPE_SMOKE,
        pairs=2,
        seq_len=32,
        prompt_len=8,
        warmup=1,
        steps=2,
        sample_prompt_lens=(4, 6, 8, 12),
        new_tokens=8,
    ),
}


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


def _body_head_attention(s: ModelShape) -> tuple[int, int, int]:
    """(N_body, N_head, L·d): matmul parameters without and of the lm_head, attention width."""
    counts = parameter_count(s)
    return counts["matmul"] - counts["lm_head"], counts["lm_head"], s.layers * s.heads * s.head_dim


def step_flops(
    s: ModelShape, tokens: int, seq_len: int, scored_tokens: int | None = None
) -> dict[str, float]:
    """Model FLOPs of one training step and of one reference forward over `tokens`, the
    lm_head applied to `scored_tokens` of them (all of them when None)."""
    body, head, ld = _body_head_attention(s)
    scored = tokens if scored_tokens is None else scored_tokens
    forward = 2 * body * tokens + 2 * head * scored + 4 * ld * seq_len * tokens
    return {"train": 3 * forward, "reference_forward": forward}


def sampling_flops(s: ModelShape, prompt_lens: tuple[int, ...] | list[int], new_tokens: int) -> int:
    """Model FLOPs of generating `new_tokens` after each prompt with a KV cache: the prompt's
    prefill (P tokens attending to P) and n - 1 decode steps (token j attends to P + j), the
    lm_head once per generated token; left padding is not counted."""
    body, head, ld = _body_head_attention(s)
    n = new_tokens
    total = 0
    for p in prompt_lens:
        attended = p * p + (n - 1) * p + n * (n - 1) // 2
        total += 2 * body * (p + n - 1) + 2 * head * n + 4 * ld * attended
    return total


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


def make_prompts(shape: ModelShape, lengths, seed: int, pad_token_id: int = 0):
    """Random prompts of the given lengths, left-padded to the longest (as raydaa samples)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, shape.vocab, (n,), generator=g)
        mask[row, width - n :] = 1
    return ids, mask


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


class MemoryMeter:
    """Peak memory of one stage: CUDA's allocator peak (reset per stage) on a GPU, the
    process's peak RSS (VmHWM, reset by writing 5 to /proc/self/clear_refs) on the CPU."""

    def __init__(self, cuda: bool):
        import torch

        self.torch, self.cuda = torch, cuda
        self.kind = "torch.cuda.max_memory_allocated" if cuda else "process peak RSS (VmHWM)"
        self.start = 0

    @staticmethod
    def _status_kib(field: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def reset(self) -> None:
        # No gc.collect(): the stages free their tensors by reference count, and a full
        # collection walks transformers' import graph for seconds. What a stage finds
        # still allocated is its start_memory_gib.
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.start = self.torch.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.kind = "process peak RSS since start (VmHWM; clear_refs refused)"
        self.start = (self._status_kib("VmRSS") or 0) * 1024

    def read(self) -> dict[str, float | None]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return {
                "start_memory_gib": self.start / GIB,
                "peak_memory_gib": self.torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": self.torch.cuda.max_memory_reserved() / GIB,
            }
        peak = self._status_kib("VmHWM")
        return {
            "start_memory_gib": self.start / GIB,
            "peak_memory_gib": None if peak is None else peak * 1024 / GIB,
        }


def _rate(flops: float, seconds: float, peak: float | None) -> dict[str, float | None]:
    return {
        "flops": flops,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
    }


def _cpu_ops():
    """raydaa/train/ops.py, loaded by path: `import raydaa.train.ops` would run
    raydaa.train's __init__, whose Ray Train import costs seconds of CPU per process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_raydaa_train_ops", REPO / "raydaa" / "train" / "ops.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build one (suite, zero, attention) configuration and run its three stages."""
    use_cuda = cfg["device"] == "cuda"
    if not use_cuda:
        # DeepSpeed's CPU accelerator JIT-builds its shm op in init_distributed: build or
        # load it where raydaa does, under raydaa's lock (raydaa/train/ops.py).
        _cpu_ops().prepare_cpu_ops(say=lambda text: print(text, file=sys.stderr, flush=True))

    import deepspeed
    import torch

    from raydaa.core.logprobs import concatenated_forward
    from raydaa.core.losses import preference_loss

    suite = Suite(**(cfg["suite"] | {"shape": ModelShape(**cfg["suite"]["shape"])}))
    shape = suite.shape
    if use_cuda:
        torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    ds_config = deepspeed_config(cfg["zero"], suite.pairs, cfg["bf16"], cfg["lr"])
    dtype = torch.bfloat16 if cfg["bf16"] else torch.float32
    config = shape.llama_config(suite.max_positions)
    torch.manual_seed(cfg["seed"])
    meter = MemoryMeter(use_cuda)
    peak = cfg["peak_flops"]

    def sync():
        if use_cuda:
            torch.cuda.synchronize()

    t_build = time.perf_counter()
    keep_alive = None
    from transformers import AutoModelForCausalLM

    if cfg["zero"] == 3:
        # Makes from_config build under deepspeed.zero.Init (partitioned at creation).
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=cfg["attn"]
        )
    else:
        with torch.device(cfg["device"]):  # initialise on the GPU: seconds, not a minute
            model = AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=cfg["attn"]
            )
    if suite.gradient_checkpointing:  # as raydaa.train.loop does
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=list(model.parameters()), config=ds_config
    )
    build_s = time.perf_counter() - t_build
    device = engine.device
    batches = [
        {k: v.to(device) for k, v in b.items()}
        for b in make_batches(
            shape, suite.pairs, suite.seq_len, suite.prompt_len, suite.n_batches, cfg["seed"]
        )
    ]
    tokens = suite.tokens
    flops = step_flops(shape, tokens, suite.seq_len, suite.scored_tokens)
    stages: dict[str, dict[str, Any]] = {}
    refs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def run_stage(name: str, body) -> None:
        """Run one stage; an exception (a CUDA OOM, say) becomes that stage's `error`, with
        the memory peak reached so far, and the next stages still run. Each stage's record
        is printed as it ends, so a process that dies or times out still reports it."""
        meter.reset()
        try:
            result = body() | meter.read()
        except Exception as e:  # any failure is a result to report
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}"[:2000]} | meter.read()
            if use_cuda:
                torch.cuda.empty_cache()
        stages[name] = result
        print("STAGE " + json.dumps({name: result}), flush=True)

    # --- reference: log-probs once per batch from the initial weights (raydaa's reference
    # cache does this once per scenario); the first pass warms up, the others are timed.
    def reference() -> dict[str, Any]:
        engine.eval()
        with torch.no_grad():
            concatenated_forward(engine, batches[0])
            sync()
            t0 = time.perf_counter()
            for b in batches:
                chosen, rejected = concatenated_forward(engine, b)
                refs.append((chosen.reduce(cfg["normalize"]), rejected.reduce(cfg["normalize"])))
            sync()
            ref_s = (time.perf_counter() - t0) / len(batches)
        return {
            "forwards_timed": len(batches),
            "tokens": tokens,
            "scored_tokens": suite.scored_tokens,
            "time_s": ref_s,
            "tokens_per_s": tokens / ref_s,
        } | _rate(flops["reference_forward"], ref_s, peak)

    # --- train: raydaa's DPO step against those reference log-probs.
    def train() -> dict[str, Any]:
        if len(refs) != len(batches):
            raise RuntimeError("no reference log-probs to train against (reference failed)")
        engine.train()
        step_times, losses = [], []
        for step in range(suite.warmup + suite.steps):
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
        timed = step_times[suite.warmup :]
        step_s = sum(timed) / len(timed)
        return {
            "steps_timed": len(timed),
            "tokens": tokens,
            "scored_tokens": suite.scored_tokens,
            "time_s": step_s,
            "step_s_min": min(timed),
            "step_s_max": max(timed),
            "first_step_s": step_times[0],
            "tokens_per_s": tokens / step_s,
            # Policy = reference at step 0, so DPO's first loss is -log σ(0) = ln 2.
            "first_loss": losses[0],
            "last_loss": losses[-1],
        } | _rate(flops["train"], step_s, peak)

    # --- sampling: model.generate with the KV cache, left-padded prompts, fixed length.
    def sampling() -> dict[str, Any]:
        hf = engine.module  # under ZeRO-3 its forward hooks gather each module's weights
        engine.eval()
        ids, mask = make_prompts(shape, suite.sample_prompt_lens, cfg["seed"])
        ids, mask = ids.to(device), mask.to(device)
        rows, width = ids.shape

        def generate(new_tokens: int) -> None:
            torch.manual_seed(cfg["seed"])
            with torch.no_grad():
                out = hf.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,  # no early EOS: every row makes new_tokens
                    do_sample=True,
                    temperature=0.9,
                    top_k=40,
                    top_p=1.0,
                    use_cache=True,
                    pad_token_id=config.pad_token_id,
                    eos_token_id=config.eos_token_id,
                )
            sync()
            if tuple(out.shape) != (rows, width + new_tokens):
                raise RuntimeError(
                    f"generate returned {tuple(out.shape)}, wanted {(rows, width + new_tokens)}"
                )

        generate(min(8, suite.new_tokens))  # warm-up: kernels, cache allocation
        prefill_s = math.inf
        for _ in range(2):  # the faster of two prefill-only runs: one token after each prompt
            t0 = time.perf_counter()
            generate(1)
            prefill_s = min(prefill_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        generate(suite.new_tokens)
        sample_s = time.perf_counter() - t0
        new_total = rows * suite.new_tokens
        decode_s = sample_s - prefill_s
        sample_flops = sampling_flops(shape, suite.sample_prompt_lens, suite.new_tokens)
        return {
            "prompt_lens": list(suite.sample_prompt_lens),
            "padded_width": width,
            "new_tokens_per_prompt": suite.new_tokens,
            "new_tokens": new_total,
            "time_s": sample_s,
            "new_tokens_per_s": new_total / sample_s,
            "prefill_s": prefill_s,
            "decode_tokens_per_s": (
                rows * (suite.new_tokens - 1) / decode_s
                if suite.new_tokens > 1 and decode_s > 0
                else None
            ),
        } | _rate(sample_flops, sample_s, peak)

    run_stage("reference", reference)
    run_stage("train", train)
    run_stage("sampling", sampling)
    errors = {name: st["error"] for name, st in stages.items() if "error" in st}
    record = {
        "status": "failed" if errors else "ok",
        "parameters": n_params,
        "build_and_init_s": build_s,
        "memory_meter": meter.kind,
        "stages": stages,
    }
    if errors:
        record["reason"] = "; ".join(f"{name}: {error}" for name, error in errors.items())
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
    if cfg["device"] == "cpu":  # tiny smoke models: one thread each, jobs run side by side
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout, stderr, failure = proc.stdout, proc.stderr, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        stdout, stderr = (
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
            for x in (e.stdout, e.stderr)
        )
        failure = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    stages: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :]) | {"process_wall_s": wall}
        if line.startswith("STAGE "):  # the stages a dead or killed process finished
            stages |= json.loads(line[len("STAGE ") :])
    tail = (stderr or stdout)[-3000:]
    record = {"status": "failed", "reason": f"{failure}: {tail}", "process_wall_s": wall}
    return record | ({"stages": stages} if stages else {})


def flash_attention_unavailable(device: str) -> str | None:
    """Why flash_attention_2 cannot run here, or None when it can."""
    if device != "cuda":
        return "flash_attention_2 needs a CUDA GPU"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "the flash-attn package is not installed (pip install flash-attn)"
    return None


def device_info(smoke: bool) -> tuple[str, str]:
    if smoke:
        return "cpu", "CPU (smoke mode)"
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run on a GPU machine, or use --smoke on a CPU")
    return "cuda", torch.cuda.get_device_name(0)


def versions() -> dict[str, str | None]:
    torch = sys.modules.get("torch")  # imported on a GPU run only: the smoke driver skips it
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__ if torch else metadata.version("torch"),
        "cuda": torch.version.cuda if torch else None,
    }
    for package in ("transformers", "deepspeed", "flash-attn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _stages(record: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """(reference, train, sampling) of a run; an empty dict for a stage it lacks, so the
    printout shows n/a (tests/test_gpu_step_bench.py is what fails on a missing stage)."""
    return tuple(record.get("stages", {}).get(stage, {}) for stage in STAGES)


def summary(record: dict[str, Any]) -> str:
    ref, train, smp = _stages(record)
    return (
        f"train {_fmt(train.get('tokens_per_s'), ',.0f')} tokens/s "
        f"({_fmt(train.get('time_s'), '.3f')} s/step, MFU {_fmt(train.get('mfu'), '.1%')}, "
        f"peak {_fmt(train.get('peak_memory_gib'), '.2f')} GiB, first loss "
        f"{_fmt(train.get('first_loss'), '.6f')}, ln 2 = {math.log(2):.6f}); reference "
        f"{_fmt(ref.get('tokens_per_s'), ',.0f')} tokens/s (peak "
        f"{_fmt(ref.get('peak_memory_gib'), '.2f')} GiB); sampling "
        f"{_fmt(smp.get('new_tokens_per_s'), ',.1f')} new tokens/s (peak "
        f"{_fmt(smp.get('peak_memory_gib'), '.2f')} GiB); process "
        f"{record['process_wall_s']:.0f} s"
    )


def render(report: dict[str, Any]) -> str:
    v = report["versions"]
    lines = [
        f"device: {report['device_name']}; torch {v['torch']} (CUDA {v['cuda']}), transformers "
        f"{v['transformers']}, deepspeed {v['deepspeed']}, flash-attn {v['flash-attn']}; "
        f"peak {_fmt(report['peak_flops'] and report['peak_flops'] / 1e12, '.0f')} TFLOPS; "
        f"memory: {report['memory_meter']}",
    ]
    for name, suite in report["suites"].items():
        lines += [
            "",
            f"{name}: {suite['parameters']:,} parameters {suite['shape']}; train {suite['pairs']} "
            f"pairs × 2 × {suite['seq_len']} tokens, gradient checkpointing "
            f"{'on' if suite['gradient_checkpointing'] else 'off'}; sampling prompts "
            f"{suite['sample_prompt_lens']} + {suite['new_tokens']} new tokens",
            "",
            "| ZeRO | attention | status | train tok/s | train MFU | train peak GiB | "
            "ref tok/s | ref MFU | ref peak GiB | sample new tok/s | prefill s | "
            "sample peak GiB | first loss |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["runs"]:
            if r["suite"] != name:
                continue
            if r["status"] != "ok":
                reason = r["reason"][-120:].replace("\n", " ").replace("|", "/")
                lines.append(f"| {r['zero']} | {r['attn']} | {r['status']}: {reason} |" + " |" * 10)
                continue
            ref, train, smp = _stages(r)
            lines.append(
                f"| {r['zero']} | {r['attn']} | ok | {_fmt(train.get('tokens_per_s'), ',.0f')} | "
                f"{_fmt(train.get('mfu'), '.1%')} | {_fmt(train.get('peak_memory_gib'), '.2f')} | "
                f"{_fmt(ref.get('tokens_per_s'), ',.0f')} | {_fmt(ref.get('mfu'), '.1%')} | "
                f"{_fmt(ref.get('peak_memory_gib'), '.2f')} | "
                f"{_fmt(smp.get('new_tokens_per_s'), ',.1f')} | "
                f"{_fmt(smp.get('prefill_s'), '.3f')} | "
                f"{_fmt(smp.get('peak_memory_gib'), '.2f')} | "
                f"{_fmt(train.get('first_loss'), '.6f')} |"
            )
    return "\n".join(lines)


def _write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, CPU, fp32")
    parser.add_argument("--out", default="raydaa_results/gpu_step.json", help="JSON report path")
    parser.add_argument("--suite", nargs="+", choices=tuple(SUITES), default=None)
    parser.add_argument("--zero", type=int, nargs="+", choices=(2, 3), default=None)
    parser.add_argument("--attn", nargs="+", choices=("sdpa", "flash_attention_2"), default=None)
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs per step")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--new-tokens", type=int, default=None, help="generated per prompt")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the GPU peak")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no configuration after this many seconds of the run (GPU default 540; "
        "each configuration's timeout is cut to what is left)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="configurations run at once: CPU smoke mode only (default 2 there, 1 on a GPU)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args(argv)

    if args.one:
        record = run_one(json.loads(args.one))
        print("RESULT " + json.dumps(record), flush=True)
        return 0

    smoke = args.smoke
    run_start = time.perf_counter()
    # The smoke run checks code paths, not speed: a loaded CPU may take minutes per process.
    timeout = args.timeout or (900.0 if smoke else 240.0)
    budget = args.budget_s or (math.inf if smoke else 540.0)
    overrides = {
        "pairs": args.pairs,
        "seq_len": args.seq_len,
        "prompt_len": args.prompt_len,
        "warmup": args.warmup,
        "steps": args.steps,
        "new_tokens": args.new_tokens,
    }
    suites = []
    for name in args.suite or list(SUITES):
        suite = replace(
            (SMOKE_SUITES if smoke else SUITES)[name],
            **{k: v for k, v in overrides.items() if v is not None},
        )
        if not 0 < suite.prompt_len < suite.seq_len or suite.pairs < 1 or suite.steps < 1:
            parser.error("need 0 < --prompt-len < --seq-len, --pairs >= 1 and --steps >= 1")
        if suite.new_tokens < 1:
            parser.error("need --new-tokens >= 1")
        suites.append(suite)
    zeros = args.zero or [2, 3]
    attns = args.attn or (["sdpa"] if smoke else ["sdpa", "flash_attention_2"])
    device, device_name = device_info(smoke)
    jobs = args.jobs or (2 if smoke else 1)
    if jobs < 1 or (jobs > 1 and device == "cuda"):
        parser.error("--jobs: 1 on a GPU (configurations would share it), >= 1 on the CPU")
    peak = (
        args.peak_tflops * 1e12
        if args.peak_tflops
        else (None if smoke else peak_flops(device_name))
    )
    print(f"device: {device_name}", flush=True)
    if peak is None:
        print(f"peak bf16 FLOPs unknown for {device_name!r}: MFU not reported (--peak-tflops)")
    if smoke:
        # DeepSpeed's CPU op: built once, visibly, before any configuration waits on it
        # (each configuration loads it through the same call, under raydaa's build lock).
        ops = _cpu_ops()
        if not (ops.extensions_dir() / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").exists():
            ops.prepare_cpu_ops()
    report: dict[str, Any] = {
        "device_name": device_name,
        "smoke": smoke,
        "versions": versions(),
        "peak_flops": peak,
        "memory_meter": (
            "torch.cuda.max_memory_allocated, reset per stage"
            if device == "cuda"
            else "process peak RSS (VmHWM), reset per stage"
        ),
        "bf16": not smoke,
        "flops_formula": "reference F = 2*N_body*tokens + 2*N_head*scored + 4*L*d*T*tokens; "
        "train 3*F; sampling sum over prompts 2*N_body*(P+n-1) + 2*N_head*n + "
        "4*L*d*(P^2 + (n-1)*P + n(n-1)/2); N_body = matmul params without lm_head, "
        "N_head = V*d_model; recomputation, optimizer, loss not counted",
        "budget_s": budget if math.isfinite(budget) else None,
        "suites": {},
        "runs": [],
    }
    for suite in suites:
        counts = parameter_count(suite.shape)
        flops = step_flops(suite.shape, suite.tokens, suite.seq_len, suite.scored_tokens)
        report["suites"][suite.name] = asdict(suite) | {
            "parameters": counts["total"],
            "parameter_breakdown": counts,
            "tokens_per_step": suite.tokens,
            "scored_tokens_per_step": suite.scored_tokens,
            "train_flops_per_step": flops["train"],
            "reference_flops_per_forward": flops["reference_forward"],
            "sampling_flops": sampling_flops(
                suite.shape, suite.sample_prompt_lens, suite.new_tokens
            ),
        }
        print(
            f"suite {suite.name}: Llama {asdict(suite.shape)}: {counts['total']:,} parameters "
            f"({counts['matmul']:,} in matmuls)",
            flush=True,
        )
    out = Path(args.out)
    flash_reason = flash_attention_unavailable(device)
    plan: list[tuple[dict[str, Any], dict[str, Any] | None, str | None]] = []
    for suite in suites:
        for attn in attns:
            for zero in zeros:
                base = {"suite": suite.name, "zero": zero, "attn": attn}
                if attn == "flash_attention_2" and flash_reason:
                    plan.append((base, None, flash_reason))
                    continue
                cfg = base | {
                    "suite": asdict(suite),
                    "device": device,
                    "bf16": not smoke,
                    "beta": args.beta,
                    "lr": args.lr,
                    "normalize": True,
                    "seed": 0,
                    "peak_flops": peak,
                }
                plan.append((base, cfg, None))

    def launch(base: dict[str, Any], cfg: dict[str, Any] | None, skip: str | None):
        label = f"{base['suite']} ZeRO-{base['zero']} + {base['attn']}"
        left = budget - (time.perf_counter() - run_start)
        if skip is None and left < 30:
            skip = f"time budget spent ({budget:.0f} s, --budget-s)"
        if skip is not None:
            print(f"skip {label}: {skip}", flush=True)
            return base | {"status": "skipped", "reason": skip}
        print(f"running {label} ...", flush=True)
        return base | run_in_subprocess(cfg, min(timeout, left))

    results: list[dict[str, Any] | None] = [None] * len(plan)
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # jobs = 1: one after the other
        futures = {pool.submit(launch, *item): i for i, item in enumerate(plan)}
        for future in as_completed(futures):
            record = results[futures[future]] = future.result()
            label = f"{record['suite']} ZeRO-{record['zero']} + {record['attn']}"
            if record["status"] == "ok":
                print(f"  {label}: {summary(record)}", flush=True)
            elif record["status"] == "failed":
                print(f"  {label} failed: {record['reason'][-500:]}", flush=True)
                if record.get("stages"):
                    print(f"  {label}, the stages it finished: {summary(record)}", flush=True)
            report["runs"] = [r for r in results if r is not None]
            report["wall_s"] = time.perf_counter() - run_start
            _write(report, out)  # after every configuration: a killed run keeps its rows
    report["wall_s"] = time.perf_counter() - run_start
    _write(report, out)
    print("\n" + render(report) + f"\n\nwrote {out} ({report['wall_s']:.0f} s)")
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
