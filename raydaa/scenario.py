"""Scenario configuration: model, data, lengths, the two training recipes and resources.

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

DEFAULT_SCENARIO = "tiny"


def search_spaces_dir() -> Path:
    """`$RAYDAA_SEARCH_SPACES`, else the repository's `search_spaces/`."""
    env = os.environ.get("RAYDAA_SEARCH_SPACES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "search_spaces"


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
        ftype = fields[name].type
        sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        kwargs[name] = build(sub, value, f"{where}.{name}") if sub else value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a missing required key
        raise ConfigError(f"{where}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


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
    preference_split: str = "train"
    validation_split: str = "test"

    def __post_init__(self) -> None:
        if self.format not in ("conversational", "plain"):
            raise ValueError(f"data.format must be conversational or plain, got {self.format!r}")


@dataclass
class RecipeConfig:
    """One training stage (paper Table 4)."""

    lr: float | None = None
    """Peak learning rate; for alignment the sweep sets it."""
    epochs: int = 1
    global_batch_size: int = 128
    micro_batch_size: int = 1
    warmup_ratio: float = 0.03
    grad_clip: float = 2.0
    adam_betas: tuple[float, float] = (0.9, 0.95)

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)
        if self.epochs < 1 or self.global_batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("epochs, global_batch_size and micro_batch_size must be >= 1")
        self.lr = None if self.lr is None else float(self.lr)


@dataclass
class ResourcesConfig:
    num_workers: int = 1
    """Ray Train workers per run (one GPU each when use_gpu)."""
    cpus_per_worker: int = 1
    use_gpu: bool = False
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 2 on CPU and for 3B models, 3 for 8B."""
    bf16: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"


@dataclass
class Scenario:
    name: str
    model: ModelConfig
    data: DataConfig
    max_length: int
    """Tokens per prompt + completion (paper: 1024 TL;DR, 4096 UF)."""
    sft: RecipeConfig = field(default_factory=RecipeConfig)
    align: RecipeConfig = field(default_factory=RecipeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")


_DATACLASSES = {c.__name__: c for c in (ModelConfig, DataConfig, RecipeConfig, ResourcesConfig)}


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
