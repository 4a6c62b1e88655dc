"""Plain training settings shared by the DeepSpeed config builder, the worker loop and the
trainer factory. One dataclass, validated once, so a bad batch split fails on the driver
before any worker starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from raydaa.config.rules import (
    check_attn_implementation,
    check_batch_split,
    check_checkpoint_every,
    check_counts,
    check_warmup_ratio,
    check_watchdog_timeouts,
    check_zero_stage,
)
from raydaa.config.scenario import WatchdogConfig


@dataclass
class TrainSettings:
    """Everything the engine needs besides the model, the loss and the data."""

    total_steps: int
    """Optimizer steps of the whole run; also the length of the lr schedule."""

    global_batch_size: int
    """Examples per optimizer step, summed over workers and accumulation steps."""

    micro_batch_size: int = 1
    """Examples per forward/backward on one worker (bounded by accelerator memory)."""

    num_workers: int = 1
    """Ray Train workers = data-parallel ranks (one GPU each when `use_gpu`)."""

    lr: float = 1e-6
    """Peak learning rate, reached after warmup (the paper sweeps it per method, Table 4)."""

    adam_betas: tuple[float, float] = (0.9, 0.95)
    """Adam beta1, beta2 of the paper's Table 4 (not the DAA β of the search space)."""

    eps: float = 1e-8
    """Adam epsilon."""

    weight_decay: float = 0.0
    """AdamW weight decay; 0 as in the paper."""

    warmup_ratio: float = 0.03
    """Fraction of `total_steps` with linear warmup before linear decay (paper Table 4)."""

    grad_clip: float = 2.0
    """Max global gradient norm (DeepSpeed `gradient_clipping`); paper Table 4."""

    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 2 on CPU and small models, 3 for the 7-8B GPU scenarios."""

    bf16: bool = False
    """bf16 weights/compute (GPU scenarios); fp32 keeps CPU tests exactly comparable."""

    torch_adam: bool = True
    """True: torch.optim.AdamW (runs everywhere). False: DeepSpeed FusedAdam (CUDA only)."""

    gradient_checkpointing: bool = False
    """Recompute activations in backward: trades ~30% compute for memory on long sequences."""

    attn_implementation: str = "sdpa"
    """HF attention kernel: "sdpa", "flash_attention_2" (GPU + flash-attn) or "eager"."""

    seed: int = 0
    """Seeds model init (identical on every rank) and the data order of every epoch."""

    log_every: int = 1
    """Report metrics to Ray Train every this many optimizer steps."""

    checkpoint_every: int | None = None
    """Report a DeepSpeed checkpoint every this many steps; None: only at the end."""

    eval_every: int | None = None
    """Call the loop's `eval_fn` every this many steps (never at the run's last step) and
    add its metrics to that step's report; None: never."""

    stop_after_steps: int | None = None
    """Stop (with a checkpoint) after this many steps, keeping the schedule of
    `total_steps`; the run can later resume to `total_steps` (status "stopped")."""

    export_hf: bool = True
    """Put an HF `save_pretrained` export of the model into the final checkpoint."""

    use_gpu: bool = False
    """One GPU per worker, NCCL and the CUDA DeepSpeed accelerator; else gloo on CPU."""

    cpus_per_worker: int = 1
    """Ray CPU reservation per worker; also torch's intra-op thread count there."""

    in_process: bool = True
    """A one-worker CPU run trains in the process that starts it (raydaa/train/in_process.py)
    instead of in a Ray Train worker; False: always through Ray Train's worker group."""

    startup_timeout_s: float = WatchdogConfig.startup_timeout_s
    """Seconds from the run's start to its first step before the watchdog stops it
    (worker start, process group, op build, model and data load all count)."""

    stall_timeout_s: float = WatchdogConfig.stall_timeout_s
    """Seconds without a step or phase change, once training runs, before the watchdog
    stops it; above the longest checkpoint save (8B ZeRO-3 to shared storage: minutes)."""

    deepspeed_overrides: dict[str, Any] = field(default_factory=dict)
    """Merged last into the DeepSpeed config (e.g. ZeRO offload); keys as in DS docs."""

    def __post_init__(self) -> None:
        # The rules these share with a scenario's sections live in raydaa.config.scenario;
        # settings also come from plain dicts (Tune configs, tests), so they check themselves.
        self.adam_betas = tuple(self.adam_betas)
        counts = ("total_steps", "global_batch_size", "micro_batch_size", "num_workers",
                  "log_every", "cpus_per_worker")
        check_counts({name: getattr(self, name) for name in counts}, each=True)
        check_batch_split(self.global_batch_size, self.micro_batch_size, self.num_workers)
        check_zero_stage(self.zero_stage)
        check_watchdog_timeouts(self.startup_timeout_s, self.stall_timeout_s)
        check_attn_implementation(self.attn_implementation)
        check_warmup_ratio(self.warmup_ratio)
        if not self.torch_adam and not self.use_gpu:
            raise ValueError("torch_adam=False selects DeepSpeed FusedAdam, which needs CUDA")
        check_checkpoint_every(self.checkpoint_every, none="None")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 or None, got {self.eval_every}")
        if self.stop_after_steps is not None and not 1 <= self.stop_after_steps <= self.total_steps:
            raise ValueError(
                f"stop_after_steps must be in [1, total_steps={self.total_steps}], "
                f"got {self.stop_after_steps}"
            )

    @property
    def grad_accum_steps(self) -> int:
        """Micro batches per optimizer step on each worker."""
        return self.global_batch_size // (self.micro_batch_size * self.num_workers)

    @property
    def warmup_steps(self) -> int:
        """Warmup length in optimizer steps (floor, so tiny runs have none)."""
        return int(self.warmup_ratio * self.total_steps)

    @property
    def last_step(self) -> int:
        """The step at which this invocation stops (`stop_after_steps` or `total_steps`)."""
        return self.stop_after_steps or self.total_steps

    @classmethod
    def coerce(cls, value: TrainSettings | dict[str, Any]) -> TrainSettings:
        """Accept a TrainSettings or a plain dict (e.g. from YAML or a Tune config);
        unknown keys are errors naming the key."""
        if isinstance(value, cls):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {unknown}; known: {sorted(known)}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
