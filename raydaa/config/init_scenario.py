"""`raydaa init`: a scenario YAML for a user's model, data, judge and hardware, every value
commented with where it came from (paper table, hardware, the user's flag).

The paper's recipe (Table 4), generation (Table 8) and the AlpacaEval judge block are read
from the shipped `llama31-8b-uf` scenario and every method's grid (Tables 4 and 6) from the
shipped method spaces, so a change there reaches new scenarios; resources are sized for
the hardware and the model's parameter count (read from its config, weights never loaded).
`--set KEY=VALUE` overrides apply last, and the result is loaded as a Scenario before the
file is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raydaa.config.loading import ConfigError
from raydaa.config.scenario import Scenario, load_scenario
from raydaa.config.scenario_writer import Path_, render, scalar
from raydaa.config.search_space import available_methods, load_method_space
from raydaa.core.methods import METHODS

RECIPE_SCENARIO = "llama31-8b-uf"
"""The shipped scenario whose recipe, generation and AlpacaEval judge a new one reuses."""
GLOBAL_BATCH = 128
"""Examples per optimizer step (paper Table 4)."""
ZERO3_ABOVE = 5e9
"""Parameters above which ZeRO-3 shards the weights too: the shipped UF scenarios run
Llama 3.2 3B at ZeRO-2 and Llama 3.1 8B at ZeRO-3 on 80 GB GPUs."""
PAIRWISE_PROMPTS = 500
"""Prompts a pairwise judge scores (paper §4.2: 500 validation prompts)."""
JUDGE_KINDS = ("reward_model:PATH", "openai:MODEL", "alpaca_eval")


def count(parameters: int) -> str:
    """8.03B, 494M, 57.2K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit}"
    return str(parameters)


def absolute_if_local(value: str | None) -> str | None:
    """An existing local file or folder as an absolute path; a hub id (or None) as given."""
    if value is None or "://" in value or not Path(value).exists():
        return value
    return str(Path(value).resolve())


@dataclass
class InitRequest:
    """What the user asked for on the command line."""

    model: str
    """A transformers model id or local folder."""
    preference_data: str
    sft_data: str | None = None
    validation_data: str | None = None
    judge: str = "alpaca_eval"
    """reward_model:PATH, openai:MODEL or alpaca_eval (the paper's UF judge)."""
    gpus_per_node: int = 0
    """0: a CPU scenario."""
    nodes: int = 1
    overrides: list[str] = field(default_factory=list)
    """`KEY=VALUE` strings, dotted keys, VALUE parsed as YAML."""

    def __post_init__(self) -> None:
        # Ray workers run in their own folders: a local path typed relative to here is
        # written absolute, so the scenario reads the same files from any process.
        self.model = absolute_if_local(self.model)
        for key in ("preference_data", "sft_data", "validation_data"):
            setattr(self, key, absolute_if_local(getattr(self, key)))
        kind, sep, rest = self.judge.partition(":")
        if kind == "reward_model" and sep:
            self.judge = f"{kind}:{absolute_if_local(rest)}"
        if self.gpus_per_node < 0:
            raise ValueError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.nodes < 1:
            raise ValueError(f"--nodes must be >= 1, got {self.nodes}")


@dataclass(frozen=True)
class ModelSize:
    """The model's size, from its config alone."""

    parameters: int | None
    """None: no config could be read offline."""
    max_positions: int | None
    """The config's max_position_embeddings, when it has one."""
    note: str
    """Where the numbers came from, for the file's comments."""


def model_size(model: str) -> ModelSize:
    """Parameters of `model` counted from its config without loading weights: the model is
    built on the meta device. Reads no network (a hub id counts only if it is cached)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        return ModelSize(None, None, "its config is not on this machine (init reads no network)")
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in net.parameters())  # tied weights counted once
    positions = getattr(config, "max_position_embeddings", None)
    return ModelSize(parameters, positions, f"{count(parameters)} parameters from its config")


@dataclass
class Draft:
    """The scenario being written: nested values and a comment per key path."""

    values: dict[str, Any]
    comments: dict[Path_, str]
    header: list[str]

    def put(self, path: Path_, value: Any, comment: str) -> None:
        node = self.values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.comments[path] = comment

    def section(self, path: Path_, comment: str) -> None:
        self.put(path, {}, comment)


def draft_scenario(request: InitRequest, name: str, size: ModelSize | None = None) -> Draft:
    """The scenario `name` for `request`, before overrides: recipe, resources, data,
    generation, judge and grids, each value commented."""
    size = size if size is not None else model_size(request.model)
    shipped = load_scenario(RECIPE_SCENARIO)
    paper = f"paper Table 4 (as scenario {RECIPE_SCENARIO})"
    draft = Draft({}, {}, _header(request, name, size))
    draft.put(("name",), name, "the output file's stem: the results folder's name")
    draft.section(("model",), "")
    draft.put(("model", "hf_id"), request.model, "--model")
    _data(draft, request)
    length = 4096
    length_note = "paper Table 4 (UF setup; 1024 for TL;DR-like data)"
    if size.max_positions is not None and size.max_positions < length:
        length, length_note = size.max_positions, "the model's max_position_embeddings (< paper's 4096)"
    draft.put(("max_length",), length, length_note)
    workers = request.nodes * request.gpus_per_node if request.gpus_per_node else request.nodes
    large = size.parameters is None or size.parameters > ZERO3_ABOVE
    for stage, micro in (("sft", 1 if large else 2), ("align", 1)):
        _recipe(draft, stage, getattr(shipped, stage), paper, micro, workers, size, request)
    _resources(draft, request, workers, large, size, shipped)
    draft.section(("watchdog",), "raydaa's defaults (docs/hangs-and-interrupts.md)")
    for key in ("startup_timeout_s", "stall_timeout_s"):
        draft.put(("watchdog", key), getattr(shipped.watchdog, key), "30 min: an 8B model from shared storage")
    draft.put(("seed",), shipped.seed, "data order, initialization and sampling")
    _generation(draft, shipped, length, request.judge)
    _judge(draft, shipped, request.judge)
    _grids(draft)
    return draft


def _header(request: InitRequest, name: str, size: ModelSize) -> list[str]:
    flags = [f"--model {request.model}", f"--preference-data {request.preference_data}"]
    flags += [f"--sft-data {request.sft_data}"] if request.sft_data else []
    flags += [f"--validation-data {request.validation_data}"] if request.validation_data else []
    flags += [f"--judge {request.judge}", f"--gpus-per-node {request.gpus_per_node}"]
    flags += [f"--nodes {request.nodes}", *(f"--set {o}" for o in request.overrides)]
    return [
        f"Scenario {name}, written by `raydaa init` on {datetime.date.today().isoformat()}:",
        f"  raydaa init {' '.join(flags)}",
        f"Model: {request.model} ({size.note}).",
        "Each value's comment says where it came from: a paper table, the hardware, or a flag.",
        "Check it with `raydaa data check --scenario FILE`; run `raydaa search --scenario FILE",
        "--method dpo`. Guide: docs/init.md.",
        "",
    ]


HELD_OUT = "10%"
"""Share of a single preference file held out as the validation set when none is given."""


def _split_of(source: str, default: str) -> tuple[str, str]:
    """The split to read of `source`, and why: one local file is one split, `train`
    (what `datasets` names it); a hub id or folder gets `default`."""
    if Path(source).is_file():
        return "train", "a single file is one split (datasets names it train)"
    return default, f"the {default} split"


def _data(draft: Draft, request: InitRequest) -> None:
    preference = request.preference_data
    one_file = request.validation_data is None and Path(preference).is_file()
    # One file of pairs and nothing else: its last rows are held out for evaluation
    # (`datasets` split slicing), the rest trains both stages.
    train_split = f"train[:-{HELD_OUT}]" if one_file else None
    sources = {
        "sft": (request.sft_data or preference, "train",
                "--sft-data" if request.sft_data else
                "no --sft-data: the preference data (its `messages`, else prompt + chosen "
                "answer)\n`raydaa sft --base` skips stage 1 instead (paper RQ1)"),
        "preference": (preference, "train", "--preference-data"),
        "validation": (request.validation_data or preference, "test",
                       "--validation-data" if request.validation_data else
                       "no --validation-data: the preference data's test split"),
    }
    draft.section(("data",), "")
    draft.put(("data", "format"), "auto",
              "inferred from the data before stage 1 (or declare conversational / plain)")
    for which, (source, default_split, origin) in sources.items():
        split, why = _split_of(source, default_split)
        if one_file and source == preference:
            held = which == "validation"
            split = f"train[-{HELD_OUT}:]" if held else train_split
            why = (f"the file's last {HELD_OUT} of rows, held out: no --validation-data" if held
                   else f"all but the file's last {HELD_OUT} of rows (held out for validation)")
            origin = "--preference-data" if which != "sft" or not request.sft_data else origin
        draft.put(("data", which), source, origin)
        draft.put(("data", f"{which}_split"), split, why)


def batch_split(global_batch: int, micro: int, workers: int) -> tuple[int, int, int, str]:
    """(global batch, micro batch, accumulation steps, note) with global = micro x workers
    x accumulation (raydaa.config.rules.check_batch_split): `micro` if it divides the
    batch, else 1; if the workers do not divide it either, the nearest multiple of them."""
    for m in dict.fromkeys((micro, 1)):
        if global_batch % (m * workers) == 0:
            return global_batch, m, global_batch // (m * workers), ""
    nearest = max(workers, round(global_batch / workers) * workers)
    note = f"; {global_batch} is no multiple of {workers} workers: the nearest multiple"
    return nearest, 1, nearest // workers, note


def _recipe(draft: Draft, stage: str, shipped: Any, paper: str, micro: int, workers: int,
            size: ModelSize, request: InitRequest) -> None:
    what = "stage 1: SFT" if stage == "sft" else "stage 2: alignment; lr comes from grids"
    draft.section((stage,), what)
    if stage == "sft":
        draft.put((stage, "lr"), shipped.lr, paper)
    draft.put((stage, "epochs"), shipped.epochs, paper)
    total, micro, accumulation, note = batch_split(GLOBAL_BATCH, micro, workers)
    unit = "rows" if stage == "sft" else "pairs"
    draft.put((stage, "global_batch_size"), total, f"{unit}, paper Table 4{note}")
    hardware = f"--nodes {request.nodes} x --gpus-per-node {request.gpus_per_node}"
    if stage == "align":
        sized = "a pair is two sequences: 1, as the shipped UF scenarios"
    elif size.parameters is None:
        sized = "model size unknown: 1, as for 8B"
    else:  # the shipped UF scenarios: 2 at 3B, 1 at 8B
        sized = f"{count(size.parameters)} parameters: as scenario llama3{'1-8b' if micro == 1 else '2-3b'}-uf"
    draft.put(
        (stage, "micro_batch_size"), micro,
        f"{workers} workers x {micro} x {accumulation} accumulation = {total} ({hardware}; {sized})",
    )
    for key in ("warmup_ratio", "grad_clip", "adam_betas", "optimizer", "lr_schedule"):
        value = getattr(shipped, key)
        draft.put((stage, key), list(value) if isinstance(value, tuple) else value, paper)


def _resources(draft: Draft, request: InitRequest, workers: int, large: bool, size: ModelSize,
               shipped: Scenario) -> None:
    gpu = request.gpus_per_node > 0
    res = shipped.resources
    draft.section(("resources",), "per run (every trial), sized for the hardware")
    if gpu:
        put = lambda key, value, why: draft.put(("resources", key), value, why)  # noqa: E731
        put("num_workers", workers, f"--nodes {request.nodes} x --gpus-per-node {request.gpus_per_node}, one GPU each")
        put("cpus_per_worker", res.cpus_per_worker, f"as scenario {RECIPE_SCENARIO}")
        put("use_gpu", True, "--gpus-per-node > 0")
        put("zero_stage", 3 if large else 2, _zero_note(large, size))
        put("bf16", True, "bf16 on GPUs (paper A.2: A100s)")
        put("gradient_checkpointing", res.gradient_checkpointing, "UF-length (4096) sequences")
        flash = importlib.util.find_spec("flash_attn") is not None
        put("attn_implementation", "flash_attention_2" if flash else "sdpa",
            "paper Table 4: flash-attn is installed here" if flash else
            "flash-attn is not installed here; paper Table 4 uses flash_attention_2")
        put("checkpoint_every", res.checkpoint_every, f"as scenario {RECIPE_SCENARIO}: a lost node costs <= 100 steps")
        put("max_failures", res.max_failures, f"as scenario {RECIPE_SCENARIO}")
        return
    cpu = Scenario.__dataclass_fields__["resources"].default_factory()
    put = lambda key, value, why: draft.put(("resources", key), value, why)  # noqa: E731
    put("num_workers", workers, f"no GPUs (--gpus-per-node {request.gpus_per_node}): one CPU worker per node")
    put("cpus_per_worker", cpu.cpus_per_worker, "as scenario tiny")
    put("use_gpu", False, "--gpus-per-node 0: a CPU scenario")
    put("zero_stage", cpu.zero_stage, "as scenario tiny (CPU)")
    put("bf16", False, "fp32 on CPU")
    put("gradient_checkpointing", False, "as scenario tiny (CPU)")
    put("attn_implementation", "sdpa", "sdpa runs on CPU")


def _zero_note(large: bool, size: ModelSize) -> str:
    if size.parameters is None:
        return "model size unknown (no local config): ZeRO-3, the safe default (8B-sized)"
    shard = "ZeRO-3 shards the weights too" if large else "ZeRO-2"
    return f"{count(size.parameters)} parameters {'>' if large else '<='} 5B: {shard}"


def _generation(draft: Draft, shipped: Scenario, length: int, judge: str) -> None:
    gen = shipped.generation
    table = f"paper Table 8 (as scenario {RECIPE_SCENARIO})"
    draft.section(("generation",), "sampling of each trial's answers: KL and the judge")
    for key in ("temperature", "top_k", "top_p"):
        draft.put(("generation", key), getattr(gen, key), table)
    tokens = min(gen.max_new_tokens, length)
    draft.put(("generation", "max_new_tokens"), tokens,
              table if tokens == gen.max_new_tokens else f"{table}, capped at max_length")
    draft.put(("generation", "num_prompts"), gen.num_prompts, "validation prompts where KL is measured (paper A.3)")
    greedy = list(gen.greedy_benchmarks) if judge == "alpaca_eval" else []
    draft.put(("generation", "greedy_benchmarks"), greedy,
              "paper A.3: Arena-Hard at temperature 0" if greedy else "no benchmark judged")


def parse_judge(judge: str) -> tuple[str, str | None]:
    """(kind, argument) of a --judge value; ValueError naming the accepted forms."""
    kind, colon, arg = judge.partition(":")
    if kind == "alpaca_eval" and not colon:
        return kind, None
    if kind in ("reward_model", "openai") and arg:
        return kind, arg
    raise ValueError(f"--judge: expected one of {', '.join(JUDGE_KINDS)}, got {judge!r}")


def _judge(draft: Draft, shipped: Scenario, judge: str) -> None:
    kind, arg = parse_judge(judge)
    put = lambda key, value, why: draft.put(("judge", key), value, why)  # noqa: E731
    if kind == "alpaca_eval":
        uf = shipped.judge
        draft.section(("judge",), f"--judge alpaca_eval: paper §4.2, as scenario {RECIPE_SCENARIO}")
        put("type", uf.type, "AlpacaEval 2 LC win rate (paper's UF metric)")
        put("baseline", uf.baseline, "the benchmark's own baseline")
        put("api_key_env", uf.api_key_env, "the annotator's key is read from this variable")
        put("endpoint_env", uf.endpoint_env, "the annotator's base URL is read from this variable")
        put("extra_benchmarks", list(uf.extra_benchmarks), "paper §4.2: Arena-Hard beside it")
        put("benchmark_prompts", {},
            "needs a local file per benchmark (nothing is downloaded at evaluation):\n"
            "e.g. {alpaca_eval: /data/alpaca_eval.json, arena_hard: /data/question.jsonl}")
        return
    draft.section(("judge",), f"--judge {judge}")
    if kind == "reward_model":
        put("type", "reward_model", "--judge reward_model:PATH")
        put("model", arg, "--judge reward_model:PATH (a sequence-classification checkpoint)")
    else:
        put("type", "gpt_side_by_side", "--judge openai:MODEL (paper §4.2: an LLM judge)")
        put("model", arg, "--judge openai:MODEL")
        put("prompt_template", "chat_side_by_side", "the general chat side-by-side prompt")
        put("endpoint_env", "OPENAI_BASE_URL", "the API base URL is read from this variable")
        put("api_key_env", "OPENAI_API_KEY", "the API key is read from this variable, never the file")
    put("baseline", "chosen", "the validation pair's chosen answer (like TL;DR's golden summaries)")
    put("num_prompts", PAIRWISE_PROMPTS, "paper §4.2: 500 validation prompts")


def _grids(draft: Draft) -> None:
    draft.section(("grids",), "each method's two-stage grid; read from the shipped method spaces")
    for method in available_methods():
        space = load_method_space(method)
        where = "/".join(Path(space.source).parts[-2:])
        draft.section(("grids", method), "")
        draft.put(("grids", method, "betas"), list(space.betas), f"paper Table 6 ({where})")
        draft.put(("grids", method, "lrs"), list(space.lrs), f"paper Table 4 ({where})")


# ---------------------------------------------------------------------------------------
# --set KEY=VALUE
# ---------------------------------------------------------------------------------------


def apply_override(draft: Draft, override: str) -> None:
    """One `KEY=VALUE` (dotted KEY, VALUE parsed as YAML) into `draft`; an unknown key is a
    ValueError naming it and the valid keys at its level."""
    key, equals, text = override.partition("=")
    if not equals or not key:
        raise ValueError(f"--set {override!r}: expected KEY=VALUE (e.g. max_length=1024)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"--set {key}: VALUE is not YAML: {err}") from None
    path = tuple(key.split("."))
    node: Any = draft.values
    for depth, part in enumerate(path):
        here = ".".join(path[:depth]) or "the top level"
        valid = _valid_keys(path[:depth], node)
        if valid is not None and part not in valid:
            raise ValueError(f"--set {key}: unknown key {part!r} at {here}; valid keys: {valid}")
        if depth == len(path) - 1:
            break
        child = node.get(part) if isinstance(node, dict) else None
        if child is None and (valid is None or part in valid):
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(
                f"--set {key}: {'.'.join(path[: depth + 1])} is {scalar(child)}, not a mapping; "
                f"set it whole, e.g. --set '{'.'.join(path[: depth + 1])}={{...}}'"
            )
        node = child
    old = node.get(path[-1], "unset")
    node[path[-1]] = value
    was = "unset" if old == "unset" else scalar(old)
    draft.comments = {p: c for p, c in draft.comments.items() if p[: len(path)] != path}
    draft.comments[path] = f"--set {key} (was {was})"


def _valid_keys(path: Path_, node: dict[str, Any]) -> list[str] | None:
    """The keys a mapping at `path` may hold: a Scenario section's fields, the method names
    under `grids`, else None (free mappings such as `columns` are checked when the
    scenario loads)."""
    if path[:1] == ("grids",):
        return sorted(set(METHODS) | set(node)) if len(path) == 1 else None
    cls: Any = Scenario
    for part in path:
        hint = typing.get_type_hints(cls).get(part)
        cls = next((t for t in (hint, *typing.get_args(hint))
                    if isinstance(t, type) and dataclasses.is_dataclass(t)), None)
        if cls is None:
            return None
    return sorted({f.name for f in dataclasses.fields(cls) if f.init} | set(node))


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def write_scenario(request: InitRequest, out: str | Path, *, force: bool = False,
                   size: ModelSize | None = None) -> tuple[Path, Scenario, ModelSize]:
    """Write the scenario of `request` to `out` (its stem is the scenario's name) and return
    the path, the loaded Scenario and the model size it was sized for. The text is loaded as a Scenario before `out` is
    written, so a bad override leaves no file; an existing `out` is kept unless `force`."""
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ValueError(f"--out {out}: expected a .yaml or .yml path")
    if out.exists() and not force:
        raise FileExistsError(f"--out {out} exists; pass --force to overwrite it")
    size = size if size is not None else model_size(request.model)
    draft = draft_scenario(request, out.stem, size)
    for override in request.overrides:
        apply_override(draft, override)
    text = render(draft.values, draft.comments, draft.header)
    if yaml.safe_load(text) != draft.values:  # the emitter's own guarantee, checked
        raise AssertionError("the scenario text does not read back as the values written")
    out.parent.mkdir(parents=True, exist_ok=True)
    # loaded from a file beside `out`, so relative paths resolve as they will from `out`
    trial = out.with_name(f".{out.stem}.{os.getpid()}.init.yaml")
    trial.write_text(text)
    try:
        scenario = load_scenario(str(trial))
    except ConfigError as err:
        trial.unlink()
        raise ConfigError(str(err).replace(str(trial), str(out))) from None
    os.replace(trial, out)
    return out, scenario, size
