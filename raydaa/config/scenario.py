"""Scenario configuration: model, data, lengths, the two training recipes, resources, the
watchdog, and how trials are evaluated (its sampling and judge: raydaa.config.evaluation).

Loaded from `scenarios/<name>.yaml` of the search-space folders (the shipped
`raydaa/search_spaces/` under the user's own: raydaa.config.space_folders), or from a YAML
path anywhere on disk, into typed dataclasses (litgpt style: a
docstring under each field, cross-field checks in `__post_init__`). An unknown key is an
error that names the file, the key and the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from raydaa.config import space_folders
from raydaa.config.defaults import DEFAULT_BATCH_TOKENS
from raydaa.config.early_stopping import EarlyStoppingConfig
from raydaa.config.evaluation import (
    PAIRWISE_JUDGES,
    GenerationConfig,
    IntermediateEvalConfig,
    JudgeConfig,
    resolve_judge_paths,
)
from raydaa.config.grids import check_grids
from raydaa.config.loading import ConfigError, build
from raydaa.config.rules import (
    check_attn_implementation,
    check_batch_split,
    check_checkpoint_every,
    check_counts,
    check_finite,
    check_flags,
    check_warmup_ratio,
    check_watchdog_timeouts,
    check_whole,
    check_zero_stage,
)

BUILDERS = ("tiny", "rehearsal")
"""Models built in code by raydaa.scenarios (`model.builder`)."""
GOLD_BUILDERS = ("tiny",)
"""The built-in models whose task has a gold judge (`judge.type: gold`)."""


def search_spaces_dir() -> Path:
    """The shipped search spaces, `raydaa/search_spaces/` inside the installed package (the
    user's folders layer over it: raydaa.config.space_folders)."""
    return space_folders.shipped_dir()


@dataclass
class ModelConfig:
    builder: str | None = None
    """A built-in model built in code ("tiny"; "rehearsal": Llama 3.1 8B's shape at tiny
    widths); exclusive with hf_id."""
    hf_id: str | None = None
    """A transformers model id or local path, loaded with AutoModelForCausalLM."""

    def __post_init__(self) -> None:
        if (self.builder is None) == (self.hf_id is None):
            raise ValueError("give exactly one of model.builder or model.hf_id")
        if self.builder not in (None, *BUILDERS):
            raise ValueError(f"unknown model.builder {self.builder!r}; valid: {list(BUILDERS)}")


@dataclass
class DataConfig:
    sft: str | dict
    """SFT data: a hub dataset id, a local file (.jsonl/.json/.csv/.parquet/.arrow) or folder
    (save_to_disk or hub layout), tiny:<split>, or a mapping {path, name, split, columns}
    (raydaa.config.data_source)."""
    preference: str | dict
    """Preference pairs, same sources."""
    validation: str | dict
    """Held-out preference pairs; their prompts are the evaluation prompts."""
    format: str = "auto"
    """conversational (chat template, UF scenarios), plain (TL;DR), or auto: inferred from
    the data before stage 1 (raydaa.data.preflight)."""
    sft_split: str | None = None
    """Split of `sft` ("train"/"test", or the hub's own name, e.g. train_sft); default train."""
    preference_split: str | None = None
    """Split of `preference` (UF: train_prefs); default train."""
    validation_split: str | None = None
    """Split of `validation` (UF: test_prefs); default test."""

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {list(DATA_FORMATS)}, got {self.format!r}")
        for which in SOURCE_KEYS:  # malformed sources fail when the scenario loads
            self.source(which)

    def source(self, which: str):
        """The typed `DataSource` of `which` in SOURCE_KEYS (path, split, name, columns)."""
        from raydaa.config.data_source import data_source

        return data_source(getattr(self, which), f"data.{which}",
                           getattr(self, f"{which}_split"), DEFAULT_SPLITS[which])


DATA_FORMATS = ("conversational", "plain", "auto")
SOURCE_KEYS = ("sft", "preference", "validation")
DEFAULT_SPLITS = {"sft": "train", "preference": "train", "validation": "test"}


@dataclass
class RecipeConfig:
    """One training stage (paper Table 4)."""

    lr: float | None = None
    """Peak learning rate; for alignment the sweep sets it (paper Table 4: SFT 6e-6)."""
    epochs: int = 1
    """Passes over the stage's data (paper: 1; single-stage setups also 2, set by the sweep)."""
    global_batch_size: int = 128
    """Examples (SFT rows or preference pairs) per optimizer step, over all workers."""
    micro_batch_size: int = 1
    """Examples per worker per forward; accumulation = global / (micro x workers)."""
    warmup_ratio: float = 0.03
    """Share of the steps with linear warmup (paper Table 4)."""
    grad_clip: float = 2.0
    """Max gradient norm (paper Table 4)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """Adam beta1, beta2 (paper Table 4)."""
    optimizer: str = "adam"
    """adam: Adam without weight decay (paper Table 4; run as AdamW with weight_decay 0)."""
    lr_schedule: str = "linear"
    """linear: linear warmup, then linear decay to 0 (paper Table 4)."""

    def __post_init__(self) -> None:
        check_whole(
            {"epochs": self.epochs, "global_batch_size": self.global_batch_size,
             "micro_batch_size": self.micro_batch_size}
        )
        if not isinstance(self.adam_betas, list | tuple):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        self.adam_betas = tuple(check_finite({"adam_betas": b})["adam_betas"] for b in self.adam_betas)
        self.warmup_ratio = check_finite({"warmup_ratio": self.warmup_ratio})["warmup_ratio"]
        self.grad_clip = check_finite({"grad_clip": self.grad_clip}, positive=True)["grad_clip"]
        if self.lr is not None:
            self.lr = check_finite({"lr": self.lr}, positive=True)["lr"]
        check_counts(
            {
                "epochs": self.epochs,
                "global_batch_size": self.global_batch_size,
                "micro_batch_size": self.micro_batch_size,
            }
        )
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        check_warmup_ratio(self.warmup_ratio)
        if self.optimizer != "adam":
            raise ValueError(
                f"optimizer must be 'adam' (the only one implemented), got {self.optimizer!r}"
            )
        if self.lr_schedule != "linear":
            raise ValueError(
                f"lr_schedule must be 'linear' (the only one implemented), got {self.lr_schedule!r}"
            )


@dataclass
class ResourcesConfig:
    num_workers: int = 1
    """Ray Train workers per run (one GPU each when use_gpu)."""
    cpus_per_worker: int = 1
    use_gpu: bool = False
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 2 on CPU and for 3B models, 3 for 8B."""
    bf16: bool = False
    """bf16 weights and activations (GPU runs); fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (long UF sequences)."""
    attn_implementation: str = "sdpa"
    """sdpa (everywhere) or flash_attention_2 (paper Table 4; needs GPUs and flash-attn)."""
    checkpoint_every: int | None = None
    """Save a resumable checkpoint every this many optimizer steps, so a lost worker or
    node costs at most that many steps; None: only the final checkpoint."""
    max_failures: int = 1
    """Restarts of a run's workers after a worker or node dies (Ray Train FailureConfig),
    each from the run's last checkpoint; -1: unlimited."""
    in_process: bool = True
    """A one-worker CPU run (tiny's trials, its SFT) trains in the process that starts it,
    the trial's driver, instead of in a Ray Train worker group: no Train controller and
    worker processes per run (their start-up was half a tiny trial). Its restarts after
    an error (max_failures) happen in that process; a lost process is Tune's trial retry,
    which resumes the run from its last checkpoint. false: every run through Ray Train."""
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    """Token budget of one reference-cache, KL-scoring or sampling batch, prompt +
    completion (for sampling, + max_new_tokens) and padding included: rows of similar
    length are grouped so that rows x longest row stays within it; a longer row runs alone."""

    def __post_init__(self) -> None:
        check_whole(
            {"num_workers": self.num_workers, "cpus_per_worker": self.cpus_per_worker,
             "zero_stage": self.zero_stage, "max_failures": self.max_failures,
             "batch_tokens": self.batch_tokens}
        )
        if self.checkpoint_every is not None:
            check_whole({"checkpoint_every": self.checkpoint_every})
        check_flags(
            {"use_gpu": self.use_gpu, "bf16": self.bf16,
             "gradient_checkpointing": self.gradient_checkpointing,
             "in_process": self.in_process}
        )
        check_counts({"num_workers": self.num_workers, "cpus_per_worker": self.cpus_per_worker})
        check_counts({"batch_tokens": self.batch_tokens}, each=True)
        check_checkpoint_every(self.checkpoint_every)
        if self.max_failures < -1:
            raise ValueError(f"max_failures must be >= -1 (-1: unlimited), got {self.max_failures}")
        check_zero_stage(self.zero_stage)
        check_attn_implementation(self.attn_implementation)
        if self.attn_implementation == "flash_attention_2" and not self.use_gpu:
            raise ValueError("attn_implementation flash_attention_2 needs use_gpu: true")


@dataclass
class WatchdogConfig:
    """Bounds on silence for every run of the scenario (SFT, alignment trials, the
    reference cache): past them the run is stopped and fails with the phase it was in."""

    startup_timeout_s: float = 1800.0
    """Start to first step: worker start (on an autoscaling cluster, node boot), process
    group, op build, model and data load. 30 min covers an 8B model from shared storage."""
    stall_timeout_s: float = 1800.0
    """No step or phase change for this long once training runs; above the longest
    checkpoint save (an 8B ZeRO-3 checkpoint to shared storage takes minutes)."""

    def __post_init__(self) -> None:
        bounds = {"startup_timeout_s": self.startup_timeout_s, "stall_timeout_s": self.stall_timeout_s}
        self.startup_timeout_s, self.stall_timeout_s = check_finite(bounds, positive=True).values()
        check_watchdog_timeouts(self.startup_timeout_s, self.stall_timeout_s, section="watchdog")


@dataclass
class Scenario:
    name: str
    """The scenario's name: its file stem, its results folder, its key in method spaces."""
    model: ModelConfig
    """The base model (stage 0)."""
    data: DataConfig
    """SFT, preference and validation data."""
    max_length: int
    """Tokens per prompt + completion (paper: 1024 TL;DR, 4096 UF)."""
    sft: RecipeConfig = field(default_factory=RecipeConfig)
    """Stage 1 recipe (paper Table 4)."""
    align: RecipeConfig = field(default_factory=RecipeConfig)
    """Stage 2 recipe; lr (and for single-stage setups epochs) come from the search space."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Per-trial resources."""
    seed: int = 0
    """Seed of data order, initialization and sampling."""
    generation: GenerationConfig | None = None
    """Sampling for evaluation (paper Table 8); every shipped scenario sets it."""
    judge: JudgeConfig | None = None
    """Quality judge (paper §4.2, A.3); every shipped scenario sets it."""
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    """Start-up and stall bounds of every run (README "When something hangs")."""
    intermediate_eval: IntermediateEvalConfig = field(default_factory=IntermediateEvalConfig)
    """Evaluations of each trial's current policy while it trains (off unless eval_every
    is set); what `raydaa search --scheduler` stops trials on."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """ASHA / HyperBand settings of `raydaa search --scheduler asha|hyperband`."""
    grids: dict[str, dict] = field(default_factory=dict)
    """The scenario's own grids per method ({dpo: {betas: [...], lrs: [...]}}, single-stage
    setups under `setups.<setup>`), with the keys of a method file's `scenarios.<name>`
    block; they win over that block, which wins over the method file's defaults."""

    def __post_init__(self) -> None:
        self.grids = check_grids(self.grids)
        check_whole({"max_length": self.max_length, "seed": self.seed})
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        for stage in ("sft", "align"):
            recipe = getattr(self, stage)
            check_batch_split(
                recipe.global_batch_size,
                recipe.micro_batch_size,
                self.resources.num_workers,
                stage=stage,
            )
        if self.judge is not None and self.judge.type == "gold" and self.model.builder not in GOLD_BUILDERS:
            raise ValueError(
                "judge.type gold exists only for the built-in tiny task (model.builder: tiny)"
            )
        if (
            self.judge is not None
            and self.generation is not None
            and self.judge.prompts is None
            and None not in (self.judge.num_prompts, self.generation.num_prompts)
            and self.judge.num_prompts > self.generation.num_prompts
        ):
            raise ValueError(
                f"judge.num_prompts ({self.judge.num_prompts}) exceeds the validation prompts "
                f"generated (generation.num_prompts = {self.generation.num_prompts})"
            )
        self._check_intermediate_eval()

    def _check_intermediate_eval(self) -> None:
        """Intermediate evaluations measure on the final evaluation's yardstick, so they
        need its pairwise judge and sampling, and a subset within its prompts."""
        every, subset = self.intermediate_eval.eval_every, self.intermediate_eval.eval_subset_prompts
        if every is None:
            return
        if self.judge is None or self.generation is None:
            raise ValueError(
                "intermediate_eval.eval_every needs the scenario's judge and generation sections "
                "(intermediate evaluations use the final evaluation's yardstick)"
            )
        if self.judge.type not in PAIRWISE_JUDGES:
            raise ValueError(
                f"intermediate_eval.eval_every needs a pairwise judge (judge.type one of "
                f"{list(PAIRWISE_JUDGES)}); judge.type {self.judge.type} is a benchmark scored "
                "after training, outside raydaa"
            )
        limits = {"generation.num_prompts": self.generation.num_prompts}
        if self.judge.prompts is None:
            limits["judge.num_prompts"] = self.judge.num_prompts
        for key, limit in limits.items():
            if limit is not None and subset > limit:
                raise ValueError(
                    f"intermediate_eval.eval_subset_prompts ({subset}) exceeds {key} ({limit}): "
                    "the subset is the first prompts of the final evaluation's"
                )


def available_scenarios(root: Path | None = None) -> list[str]:
    """Scenario names over the search-space folders (shipped and the user's), or of `root`
    alone."""
    return list(space_folders.listing("scenarios", root))


def load_scenario(name_or_path: str, root: Path | None = None) -> Scenario:
    """A scenario by name (`scenarios/<name>.yaml` of the first search-space folder that has
    it, the user's before the shipped one; `root` alone when given) or by a YAML path
    anywhere on disk. Its name is the file's `name:` key."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        found = space_folders.find("scenarios", name_or_path, root)
        if found is None:
            raise ConfigError(
                f"unknown scenario {name_or_path!r} (no {name_or_path}.yaml in "
                f"{space_folders.where('scenarios', root)}); valid: {available_scenarios(root)}"
            )
        path = found
    elif not path.is_file():
        raise ConfigError(f"{path}: no such scenario file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    resolve_judge_paths(data, path.parent)
    return build(Scenario, data, str(path))
