"""Scenario configuration: model, data, lengths, the two training recipes, resources, and how
trials are evaluated (generation parameters and the judge).

Loaded from `search_spaces/scenarios/<name>.yaml` into typed dataclasses (litgpt style: a
docstring under each field, cross-field checks in `__post_init__`). An unknown key is an
error that names the file, the key and the valid keys.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raydaa.config.judge_prompts import get_template


def search_spaces_dir() -> Path:
    """`$RAYDAA_SEARCH_SPACES`, else the repository's `search_spaces/`."""
    env = os.environ.get("RAYDAA_SEARCH_SPACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "search_spaces"


class ConfigError(ValueError):
    """A YAML file does not describe a valid configuration; the message names file and key."""


def build(cls, data: Any, where: str):
    """Instantiate dataclass `cls` from a mapping, recursing into dataclass fields; unknown
    or missing keys raise ConfigError naming `where` (file and key path)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_of(fields[name].type)
        optional_and_absent = value is None and _is_optional(fields[name].type)
        kwargs[name] = (
            build(sub, value, f"{where}.{name}") if sub and not optional_and_absent else value
        )
    try:
        return cls(**kwargs)
    except TypeError as err:  # a missing required key
        raise ConfigError(f"{where}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _type_names(ftype: Any) -> list[str]:
    """The member names of a field's annotation: "X | None" -> ["X", "None"]."""
    text = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    return [part.strip() for part in text.split("|")]


def _dataclass_of(ftype: Any):
    """The section dataclass a field holds (also for an optional "X | None" field), or None."""
    return next((_DATACLASSES[n] for n in _type_names(ftype) if n in _DATACLASSES), None)


def _is_optional(ftype: Any) -> bool:
    return "None" in _type_names(ftype)


# ---------------------------------------------------------------------------------------
# Rules the recipe, resources and watchdog sections share with
# raydaa.train.settings.TrainSettings, which is built from them but also from plain dicts
# (Tune configs, benchmarks, tests) and so checks its fields with these same functions.
# A keyword argument picks the wording: the scenario's keys, or TrainSettings' fields.
# ---------------------------------------------------------------------------------------

ZERO_STAGES = (0, 1, 2, 3)
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def check_counts(counts: dict[str, Any], *, each: bool = False) -> None:
    """Counts (epochs, steps, batch sizes, workers, CPUs) must be >= 1. The error names all
    of `counts` (a scenario section), or with `each` the first one below 1 and its value."""
    if each:
        for name, value in counts.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
    elif any(value < 1 for value in counts.values()):
        *names, last = counts
        raise ValueError(f"{', '.join(names)} and {last} must be >= 1")


def check_batch_split(
    global_batch_size: int, micro_batch_size: int, num_workers: int, *, stage: str | None = None
) -> None:
    """A global batch is whole micro batches on every worker: a multiple of
    micro_batch_size x num_workers. `stage` (sft, align): the error names its scenario keys."""
    per_step = micro_batch_size * num_workers
    if not global_batch_size % per_step:
        return
    if stage is not None:
        raise ValueError(
            f"{stage}.global_batch_size ({global_batch_size}) is not a multiple of "
            f"{stage}.micro_batch_size x resources.num_workers "
            f"({micro_batch_size} x {num_workers})"
        )
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by "
        f"micro_batch_size*num_workers={micro_batch_size}*{num_workers}="
        f"{per_step}; pick a global batch that is a multiple of {per_step}"
    )


def check_warmup_ratio(ratio: float) -> None:
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}")


def check_zero_stage(stage: int) -> None:
    if stage not in ZERO_STAGES:
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {stage}")


def check_attn_implementation(name: str) -> None:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, got {name!r}"
        )


def check_checkpoint_every(steps: int | None, *, none: str = "null") -> None:
    """Steps between resumable checkpoints: >= 1, or `none` (only the final checkpoint)."""
    if steps is not None and steps < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or {none}, got {steps}")


def check_watchdog_timeouts(
    startup_timeout_s: float, stall_timeout_s: float, *, section: str | None = None
) -> None:
    """Both watchdog bounds > 0. `section` (watchdog): the error names its scenario keys."""
    if startup_timeout_s > 0 and stall_timeout_s > 0:
        return
    if section is None:
        raise ValueError("startup_timeout_s and stall_timeout_s must be > 0")
    raise ValueError(
        f"{section}.startup_timeout_s and {section}.stall_timeout_s must be > 0, got "
        f"{startup_timeout_s} and {stall_timeout_s}"
    )


@dataclass
class ModelConfig:
    builder: str | None = None
    """A built-in model ("tiny") built in code; exclusive with hf_id."""
    hf_id: str | None = None
    """A transformers model id or local path, loaded with AutoModelForCausalLM."""

    def __post_init__(self) -> None:
        if (self.builder is None) == (self.hf_id is None):
            raise ValueError("give exactly one of model.builder or model.hf_id")
        if self.builder not in (None, "tiny"):
            raise ValueError(f"unknown model.builder {self.builder!r}; valid: ['tiny']")


@dataclass
class DataConfig:
    sft: str
    """SFT data: a public dataset name, a local JSONL/Parquet/Arrow path, or tiny:<split>."""
    preference: str
    """Preference pairs, same sources."""
    validation: str
    """Held-out preference pairs; their prompts are the evaluation prompts."""
    format: str = "conversational"
    """conversational (chat template, UF scenarios) or plain (TL;DR)."""
    sft_split: str = "train"
    """Split of `sft` ("train"/"test", or the hub's own name, e.g. train_sft)."""
    preference_split: str = "train"
    """Split of `preference` (UF: train_prefs)."""
    validation_split: str = "test"
    """Split of `validation` (UF: test_prefs)."""

    def __post_init__(self) -> None:
        if self.format not in ("conversational", "plain"):
            raise ValueError(f"data.format must be conversational or plain, got {self.format!r}")


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
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        check_counts(
            {
                "epochs": self.epochs,
                "global_batch_size": self.global_batch_size,
                "micro_batch_size": self.micro_batch_size,
            }
        )
        self.lr = None if self.lr is None else float(self.lr)
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        check_warmup_ratio(self.warmup_ratio)
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
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

    def __post_init__(self) -> None:
        check_counts({"num_workers": self.num_workers, "cpus_per_worker": self.cpus_per_worker})
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
        check_watchdog_timeouts(self.startup_timeout_s, self.stall_timeout_s, section="watchdog")


BENCHMARKS = ("alpaca_eval", "arena_hard")
"""Public benchmarks a UF scenario is judged on; each brings its own prompts and baseline."""
PAIRWISE_JUDGES = ("gold", "gpt_side_by_side", "reward_model")
"""Judges that compare the policy's answer with a baseline answer, prompt by prompt."""
JUDGES = (*PAIRWISE_JUDGES, *BENCHMARKS)


@dataclass
class SamplingConfig:
    """How answers are sampled (paper Table 8): the fields `raydaa.evaluate.generation.sample`
    reads. Not frozen, since GenerationConfig (a scenario section, which scripts and tests
    set in place) extends it; `dataclasses.replace` gives a changed copy."""

    temperature: float = 0.9
    """Sampling temperature (paper Table 8); 0 is greedy."""
    top_k: int = 40
    """Keep the k most likely tokens (paper Table 8); 0 disables."""
    top_p: float = 1.0
    """Nucleus sampling mass (paper Table 8); 1.0 disables."""
    max_new_tokens: int = 256
    """Tokens generated per answer (paper Table 8: 256 TL;DR, 4096 UF)."""

    def __post_init__(self) -> None:
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class GenerationConfig(SamplingConfig):
    """Sampling of each trial's answers, for the KL estimate and the judge (paper Table 8)."""

    num_prompts: int | None = None
    """Validation prompts sampled per trial, where KL(policy || reference) is measured
    (paper A.3: on the validation subset); None: all of them."""
    greedy_benchmarks: list[str] = field(default_factory=list)
    """Benchmarks generated with temperature 0 whatever `temperature` says (paper A.3:
    Arena-Hard, following its original configuration)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1 or null (all), got {self.num_prompts}")
        unknown = sorted(set(self.greedy_benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"greedy_benchmarks: unknown {unknown}; valid: {list(BENCHMARKS)}")


@dataclass
class JudgeConfig:
    """How a trial's quality is measured (paper §4.2, A.3)."""

    type: str
    """gold: tiny's programmatic judge; gpt_side_by_side: an LLM behind an OpenAI-compatible
    endpoint compares the policy's answer with a baseline answer (TL;DR, paper Appendix I
    prompt); reward_model: a local sequence-classification reward model scores both answers;
    alpaca_eval / arena_hard: the public benchmark (UF; AlpacaEval 2 LC win rate is the
    paper's primary UF metric), its prompts from `benchmark_prompts`."""
    num_prompts: int | None = None
    """Prompts judged, for judges on the scenario's own prompts (paper: 500 golden TL;DR
    prompts); None: all. Benchmarks bring their own prompts, so null there."""
    baseline: str = "chosen"
    """What the policy's answer is compared with: sft_policy (the scenario's reference
    policy's own samples on the same prompts), chosen (the validation pair's chosen
    answer), reference (the reference completion of `prompts`, TL;DR's golden summaries),
    benchmark (the benchmark's own baseline model)."""
    prompts: str | None = None
    """Source of the judged prompts when they are not the scenario's validation pairs
    (TL;DR: `trl-lib/tldr`, whose validation split holds the golden summaries)."""
    prompts_split: str = "validation"
    """Split of `prompts`."""
    model: str | None = None
    """The judge model: gpt_side_by_side: the model name the endpoint serves
    (gpt-4o-2024-08-06, paper §4.2); reward_model: the checkpoint's local path; alpaca_eval:
    the annotators config (null: AlpacaEval 2's default); null for gold."""
    endpoint: str | None = None
    """The judge API's base URL, written here (e.g. http://localhost:8000/v1, a vLLM
    server); exclusive with endpoint_env."""
    endpoint_env: str | None = None
    """Environment variable holding the judge API's base URL (read at evaluation time)."""
    api_key_env: str | None = None
    """Environment variable holding the judge API's key (the key never goes into YAML)."""
    prompt_template: str | None = None
    """The side-by-side prompt: tldr_side_by_side (paper Appendix I)."""
    extra_benchmarks: list[str] = field(default_factory=list)
    """Further benchmarks reported next to `type` (UF: arena_hard beside alpaca_eval)."""
    benchmark_prompts: dict[str, str] = field(default_factory=dict)
    """Benchmark -> local file of its prompts (AlpacaEval's alpaca_eval.json, Arena-Hard's
    question.jsonl): nothing is downloaded at evaluation time."""
    cache: str | None = None
    """SQLite file caching the LLM judge's answers; null: $RAYDAA_JUDGE_CACHE, else
    ~/.cache/raydaa/judgments.sqlite."""
    concurrency: int = 8
    """Requests in flight to the LLM judge's endpoint."""

    def __post_init__(self) -> None:
        if self.type not in JUDGES:
            raise ValueError(f"judge.type: unknown {self.type!r}; valid: {list(JUDGES)}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1 or null (all), got {self.num_prompts}")
        if self.baseline not in ("sft_policy", "chosen", "reference", "benchmark"):
            raise ValueError(
                f"baseline must be sft_policy, chosen, reference or benchmark, got {self.baseline!r}"
            )
        unknown = sorted(set(self.extra_benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"extra_benchmarks: unknown {unknown}; valid: {list(BENCHMARKS)}")
        if self.type in self.extra_benchmarks:
            raise ValueError(f"extra_benchmarks repeats the judge type {self.type!r}")
        if self.type in BENCHMARKS:
            if self.num_prompts is not None or self.prompts is not None:
                raise ValueError(
                    f"{self.type} brings its own prompts: num_prompts and prompts must be null"
                )
            if self.baseline != "benchmark":
                raise ValueError(
                    f"{self.type} compares with its own baseline: baseline must be 'benchmark'"
                )
        elif self.baseline == "benchmark":
            raise ValueError(f"baseline 'benchmark' needs a benchmark judge, not {self.type!r}")
        if self.type == "gpt_side_by_side":
            missing = [k for k in ("model", "prompt_template") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"gpt_side_by_side needs {missing}")
            if (self.endpoint is None) == (self.endpoint_env is None):
                raise ValueError(
                    "gpt_side_by_side needs exactly one of endpoint (the base URL) or "
                    "endpoint_env (the environment variable holding it)"
                )
            get_template(self.prompt_template)
        elif self.prompt_template is not None:
            raise ValueError(
                f"prompt_template is for gpt_side_by_side, not {self.type!r}: set it null"
            )
        if self.type == "reward_model":
            if self.model is None:
                raise ValueError("reward_model needs model: the reward model checkpoint's path")
            if self.endpoint or self.endpoint_env or self.api_key_env:
                raise ValueError(
                    "reward_model runs locally: endpoint, endpoint_env and api_key_env must be null"
                )
        if self.endpoint is not None and self.endpoint_env is not None:
            raise ValueError("give endpoint or endpoint_env, not both")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        judged = {self.type, *self.extra_benchmarks} & set(BENCHMARKS)
        stray = sorted(set(self.benchmark_prompts) - judged)
        if stray:
            raise ValueError(
                f"benchmark_prompts: {stray} not judged here; benchmarks judged: {sorted(judged)}"
            )
        if self.baseline == "reference" and self.prompts is None:
            raise ValueError(
                "baseline 'reference' compares with the reference completions of `prompts`: set prompts"
            )
        if self.type == "gold" and (
            self.model or self.endpoint or self.endpoint_env or self.api_key_env
        ):
            raise ValueError(
                "the gold judge is code: model, endpoint, endpoint_env and api_key_env must be null"
            )
        if self.type == "gold" and self.prompts is not None:
            raise ValueError(
                "the gold judge scores the scenario's validation prompts: prompts must be null"
            )


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

    def __post_init__(self) -> None:
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
        if self.judge is not None and self.judge.type == "gold" and self.model.builder != "tiny":
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


_DATACLASSES = {
    c.__name__: c
    for c in (
        ModelConfig,
        DataConfig,
        RecipeConfig,
        ResourcesConfig,
        GenerationConfig,
        JudgeConfig,
        WatchdogConfig,
    )
}


def available_scenarios(root: Path | None = None) -> list[str]:
    root = root or search_spaces_dir()
    return sorted(p.stem for p in (root / "scenarios").glob("*.yaml"))


def load_scenario(name_or_path: str, root: Path | None = None) -> Scenario:
    """A scenario by name (search_spaces/scenarios/<name>.yaml) or by YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = (root or search_spaces_dir()) / "scenarios" / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown scenario {name_or_path!r}; valid: {available_scenarios(root)}"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return build(Scenario, data, str(path))
