"""The two training stages of a scenario, as Ray Train runs of the generic DeepSpeed loop.

    stage 1  run_sft        SFT on the scenario's SFT data (or the base model, paper RQ1);
                            its export is registered as the scenario's reference policy
    stage 2  run_alignment  one DAA method with one configuration, initialised from the
                            reference, reading reference log-probs from the shared cache

Both read the scenario's recipe (paper Table 4, scaled for `tiny`) and never name a
method: `PreferenceObjective` reads the method's spec.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets

from raydaa.config.defaults import DEFAULT_RESULTS
from raydaa.config.scenario import RecipeConfig, Scenario
from raydaa.config.search_space import AlignConfig
from raydaa.data.collators import SFTCollator
from raydaa.data.preflight import ALL_SOURCES, preflight
from raydaa.data.tokenize import Prepared, load_tokenizer, prepare_preferences, prepare_sft
from raydaa.io import storage
from raydaa.io.models import pretrained_model
from raydaa.train.objectives import PreferenceObjective, SFTObjective
from raydaa.train.refcache import ensure_reference_cache

# ---------------------------------------------------------------------------------------
# Scenario assets: tokenizer, model factory, prepared data
# ---------------------------------------------------------------------------------------


def base_model(scenario: Scenario, **load_kwargs):
    """The scenario's stage-0 model: a built-in one (raydaa.scenarios), or a pretrained HF
    checkpoint."""
    from raydaa.scenarios.assets import builtin_model

    model = builtin_model(scenario)
    if model is not None:
        return model
    return pretrained_model(scenario.model.hf_id, **load_kwargs)


def prepare(
    scenario: Scenario, which: str, tokenizer, *, fraction: float = 1.0
) -> Prepared:
    """Validated, tokenized data of the scenario: which in {"sft", "preference", "validation"}.
    Refuses (DataValidationError) above the bad-row threshold, with the full report."""
    source = scenario.data.source(which)
    split = source.split
    name = f"{scenario.name}:{which}"
    if which == "sft":
        return prepare_sft(
            source,
            tokenizer,
            max_length=scenario.max_length,
            split=split,
            fraction=fraction,
            seed=scenario.seed,
            name=name,
        )
    return prepare_preferences(
        source, tokenizer, max_length=scenario.max_length, split=split, name=name
    )


def saved_dataset(prepared: Prepared, root: str | Path):
    """Save tokenized rows once under `root/data/<fingerprint>` (a storage path) and return
    a loader that workers call: the rows travel through storage, not through the pickled
    train config."""
    path = storage.join(root, "data", prepared.fingerprint[:32])
    if not storage.exists(storage.join(path, "dataset_info.json")):
        save_directory(path, lambda d: prepared.dataset.save_to_disk(d))
    return partial(load_saved_dataset, path)


def load_saved_dataset(path: str):
    """A dataset saved by `saved_dataset`, opened on this node (copied here if remote)."""
    return datasets.load_from_disk(storage.local_copy(path))


def save_directory(path: str, write, *, replace: bool = True) -> None:
    """Run `write(local_dir)` and publish the result at the storage path `path`: written
    beside it and renamed (a directory) or uploaded (an object store); `replace=False`
    adds files to what `path` holds."""
    import tempfile

    if not storage.is_uri(path) and not replace:
        write(path)
        return
    with tempfile.TemporaryDirectory(prefix="raydaa-save-") as tmp:
        write(tmp)
        if replace:
            storage.upload_dir(tmp, path)
        else:
            storage.upload_files(tmp, path)


# ---------------------------------------------------------------------------------------
# Settings from a recipe
# ---------------------------------------------------------------------------------------


def train_settings(
    scenario: Scenario, recipe: RecipeConfig, n_rows: int, *, lr: float, **overrides: Any
) -> dict[str, Any]:
    """TrainSettings (as a dict) for `epochs` over `n_rows` with the scenario's resources."""
    res = scenario.resources
    steps = recipe_steps(recipe, n_rows)
    settings = {
        "total_steps": steps,
        "global_batch_size": recipe.global_batch_size,
        "micro_batch_size": recipe.micro_batch_size,
        "num_workers": res.num_workers,
        "cpus_per_worker": res.cpus_per_worker,
        "use_gpu": res.use_gpu,
        "in_process": res.in_process,
        "lr": lr,
        "adam_betas": recipe.adam_betas,
        "warmup_ratio": recipe.warmup_ratio,
        "grad_clip": recipe.grad_clip,
        "zero_stage": res.zero_stage,
        "bf16": res.bf16,
        "gradient_checkpointing": res.gradient_checkpointing,
        "attn_implementation": res.attn_implementation,
        "checkpoint_every": res.checkpoint_every,
        "seed": scenario.seed,
        "log_every": max(1, steps // 20),
        "startup_timeout_s": scenario.watchdog.startup_timeout_s,
        "stall_timeout_s": scenario.watchdog.stall_timeout_s,
    }
    settings.update(overrides)
    return settings


def recipe_steps(recipe: RecipeConfig, n_rows: int, epochs: int | None = None) -> int:
    """Optimizer steps of a run of `recipe` over `n_rows` (`epochs`: instead of the
    recipe's, as a single-stage setup sets them)."""
    return max(1, math.ceil((epochs or recipe.epochs) * n_rows / recipe.global_batch_size))


def watchdog_limits(scenario: Scenario):
    from raydaa.train.watchdog import Limits

    return Limits(scenario.watchdog.startup_timeout_s, scenario.watchdog.stall_timeout_s)


def prepare_engine(scenario: Scenario, say=print) -> None:
    """Before the first run on this machine: build the DeepSpeed ops a CPU run loads, here
    and visibly, so no trial waits on a build (raydaa/train/ops.py). GPU runs load none."""
    if not scenario.resources.use_gpu:
        from raydaa.train.ops import prepare_cpu_ops

        prepare_cpu_ops(say=say)


# ---------------------------------------------------------------------------------------
# Stage 1: SFT and the reference registry
# ---------------------------------------------------------------------------------------


def scenario_root(results: str | Path, scenario: Scenario) -> str:
    """`<results>/<scenario>` as a storage path: an absolute directory or a URI."""
    return storage.join(storage.resolve(results), scenario.name)


def scenario_dir(results: str | Path, scenario: Scenario) -> Path:
    """`<results>/<scenario>` as a directory (object-store results have none)."""
    if storage.is_uri(results):
        raise ValueError(f"results {results} are in an object store: use scenario_root()")
    return Path(scenario_root(results, scenario))


def reference_record(results: str | Path, scenario: Scenario) -> dict[str, Any] | None:
    """The registered reference of a scenario ({"path", "init", "fraction", ...}) or None."""
    text = storage.read_text(storage.join(scenario_root(results, scenario), "reference.json"))
    return json.loads(text) if text is not None else None


def _register(results, scenario: Scenario, record: dict[str, Any]) -> None:
    path = storage.join(scenario_root(results, scenario), "reference.json")
    storage.write_text(path, json.dumps(record, indent=2))


@dataclass
class StageResult:
    status: str
    """finished, diverged, stopped, or failed."""
    path: str | None
    """HF export of the trained model (None when the run produced none)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    node_id: str | None = None
    """Ray node of rank 0's last attempt (a restart after a lost node may move it)."""
    hostname: str | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    """Rank 0's moments of its last attempt (raydaa.train.timeline)."""

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _hf_export(result, storage_path: str) -> str | None:
    """The storage path of the final checkpoint's HF export (Ray gives the checkpoint as a
    path inside its filesystem: a URI gets its scheme back)."""
    if result.checkpoint is None:
        return None
    path = f"{result.checkpoint.path}/hf"
    if storage.is_uri(storage_path):
        path = f"{storage_path.split('://', 1)[0]}://{path}"
    return path if storage.exists(path) else None


def peak_memory_line(report: dict[str, Any], settings) -> str:
    """`peak memory per worker: 1.21 GiB resident (max of 2 workers)`, from a training
    report's `peak_rss_mib` / `peak_gpu_mib` (raydaa.train.metrics.peak_memory_mib)."""
    workers = getattr(settings, "num_workers", None) or settings.get("num_workers")
    parts = [f"{report[key] / 1024:.2f} GiB {what}"
             for key, what in (("peak_rss_mib", "resident"), ("peak_gpu_mib", "GPU"))
             if isinstance(report.get(key), int | float)]
    if not parts:
        return "peak memory not reported"
    return f"peak memory per worker: {', '.join(parts)} (max of {workers} workers)"


def _run(
    settings: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    model_fn,
    loss_fn,
    dataset,
    collate_fn,
    max_failures: int = 0,
    callbacks=(),
    progress: str | None = None,
    eval_fn=None,
) -> StageResult:
    from raydaa.train import run_training

    start = time.perf_counter()
    result = run_training(
        settings,
        progress=progress,
        name=name,
        storage_path=storage_path,
        max_failures=max_failures,
        callbacks=callbacks,
        model_fn=model_fn,
        loss_fn=loss_fn,
        dataset=dataset,
        collate_fn=collate_fn,
        eval_fn=eval_fn,
    )
    out = result.return_value or {}
    if progress and out.get("history"):
        print(f"{progress}: {out.get('status')} after {time.perf_counter() - start:.0f} s, "
              f"{peak_memory_line(out['history'][-1], settings)}", flush=True)
    return StageResult(
        status=out.get("status", "failed"),
        path=_hf_export(result, storage_path),
        history=out.get("history", []),
        seconds=time.perf_counter() - start,
        node_id=out.get("node_id"),
        hostname=out.get("hostname"),
        timeline=out.get("timeline") or {},
    )


def run_sft(
    scenario: Scenario,
    *,
    results: str | Path = DEFAULT_RESULTS,
    fraction: float = 1.0,
    base_init: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Stage 1, once per scenario: train SFT (or take the base model, `base_init`, paper RQ1),
    save it with its tokenizer, and register it as the scenario's reference. An existing
    registration with the same settings is reused unless `force`."""
    root = scenario_root(results, scenario)
    wanted = {
        "init": "base" if base_init else "sft",
        "fraction": None if base_init else fraction,
        "seed": scenario.seed,
    }
    existing = reference_record(results, scenario)
    if existing and not force and all(existing.get(k) == v for k, v in wanted.items()):
        return existing

    # sources, formats and validation prompts, before any compute
    preflight(scenario, ("preference", "validation") if base_init else ALL_SOURCES)
    tokenizer = load_tokenizer(scenario)
    record = dict(wanted, scenario=scenario.name, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if base_init:
        target = storage.join(root, "base")
        model = base_model(scenario)
        save_directory(target, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
        record |= {"path": target, "status": "finished"}
    else:
        prepared = prepare(scenario, "sft", tokenizer, fraction=fraction)
        lr = scenario.sft.lr
        if lr is None:
            raise ValueError(f"scenario {scenario.name}: sft.lr is required for the SFT stage")
        settings = train_settings(scenario, scenario.sft, len(prepared.dataset), lr=lr)
        prepare_engine(scenario)
        name = f"sft-frac{fraction:g}-seed{scenario.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        stage = _run(
            settings,
            name=name,
            storage_path=storage.join(root, "runs"),
            model_fn=partial(base_model, scenario),
            loss_fn=SFTObjective(),
            dataset=saved_dataset(prepared, root),
            collate_fn=SFTCollator(tokenizer.pad_token_id),
            progress=f"stage 1 (SFT {scenario.name})",
        )
        if stage.status != "finished" or stage.path is None:
            raise RuntimeError(
                f"SFT stage ended with status {stage.status!r} at "
                f"{stage.final.get('step')}: nothing registered"
            )
        save_directory(stage.path, tokenizer.save_pretrained, replace=False)
        record |= {
            "path": stage.path,
            "status": stage.status,
            "rows": len(prepared.dataset),
            "dropped": prepared.report.n_bad,
            "final_loss": stage.final.get("loss"),
            "seconds": round(stage.seconds, 1),
        }
    _register(results, scenario, record)
    return record


# ---------------------------------------------------------------------------------------
# Stage 2: one alignment run
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentInputs:
    """What every trial of a scenario shares, computed once by `prepare_alignment` and
    shipped to each trial (storage paths only: every node reads them)."""

    reference: dict[str, Any]
    """The registered reference record (`path`: the SFT checkpoint every trial starts from)."""
    rows: int
    """Preference pairs after validation."""
    dataset: Callable[[], datasets.Dataset]
    """Loads the tokenized preference data saved under the scenario's root."""
    pad_token_id: int
    cache: str | None = None
    """URI of the reference log-prob cache; None when no method of the sweep needs it."""

    @property
    def reference_path(self) -> str:
        return self.reference["path"]


def prepare_alignment(
    scenario: Scenario, *, results: str | Path = DEFAULT_RESULTS, needs_reference: bool = True
) -> AlignmentInputs:
    """Everything trials share, computed once: reference record, tokenized preference data
    (saved), and the reference log-prob cache when some method needs it."""
    ref = reference_record(results, scenario)
    if ref is None:
        raise FileNotFoundError(
            f"scenario {scenario.name} has no reference policy under {scenario_root(results, scenario)}; "
            f"run `raydaa sft --scenario {scenario.name}` first"
        )
    preflight(scenario, ("preference", "validation"))  # before the reference cache's compute
    tokenizer = load_tokenizer(scenario)
    prepared = prepare(scenario, "preference", tokenizer)
    root = scenario_root(results, scenario)
    prepare_engine(scenario)  # the trials' workers then find the ops built
    cache = None
    if needs_reference:
        cache = ensure_reference_cache(
            ref["path"],
            prepared,
            root,
            pad_token_id=tokenizer.pad_token_id,
            num_workers=max(1, scenario.resources.num_workers),
            use_gpu=scenario.resources.use_gpu,
            limits=watchdog_limits(scenario),
            batch_tokens=scenario.resources.batch_tokens,
        )
    return AlignmentInputs(
        reference=ref,
        rows=len(prepared.dataset),
        dataset=saved_dataset(prepared, root),
        pad_token_id=tokenizer.pad_token_id,
        cache=cache,
    )


def run_alignment(
    scenario: Scenario,
    config: AlignConfig,
    inputs: AlignmentInputs,
    *,
    results: str | Path = DEFAULT_RESULTS,
    name: str | None = None,
    callbacks=(),
    progress: str | None = None,
    **setting_overrides: Any,
) -> StageResult:
    """Train the reference policy with one DAA configuration (the policy starts at π_ref).
    `callbacks`: Ray Train UserCallbacks (run in the Train controller, or here for a run
    trained in this process: raydaa/train/in_process.py). With the
    scenario's `intermediate_eval.eval_every`, rank 0 evaluates the current policy on the
    evaluation subset every that many steps (raydaa.evaluate.intermediate) and the
    metrics join those steps' reports."""
    from raydaa.data.collators import PreferenceCollator

    objective = PreferenceObjective(
        config.loss,
        reference_cache=inputs.cache,
        pad_token_id=inputs.pad_token_id,
    )
    recipe = (
        scenario.align
        if config.epochs is None
        else RecipeConfig(**{**scenario.align.__dict__, "epochs": config.epochs})
    )
    # the run's own seed (a replicate's) orders the data and seeds the workers' RNGs
    seeded = {"seed": config.training_seed(scenario.seed),
              "eval_every": scenario.intermediate_eval.eval_every, **setting_overrides}
    settings = train_settings(scenario, recipe, inputs.rows, lr=config.lr, **seeded)
    replicate = "" if config.seed is None else f"-s{config.seed}"
    name = name or (
        f"{config.loss.method}-b{config.loss.beta:g}-lr{config.lr:g}{replicate}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    )
    try:
        return _run(
            settings,
            name=name,
            storage_path=storage.join(scenario_root(results, scenario), "runs"),
            model_fn=partial(pretrained_model, inputs.reference_path),
            max_failures=scenario.resources.max_failures,
            callbacks=callbacks,
            loss_fn=objective,
            dataset=inputs.dataset,
            collate_fn=PreferenceCollator(inputs.pad_token_id),
            eval_fn=intermediate_evaluation(scenario, inputs.reference_path),
            progress=progress or name,
        )
    except Exception as err:  # a failed run is a result with its reason, not a crash
        return StageResult(status="failed", path=None, error=f"{type(err).__name__}: {err}")


def intermediate_evaluation(scenario: Scenario, reference_path: str):
    """The loop's `eval_fn` for the scenario's intermediate evaluations, or None when
    `intermediate_eval.eval_every` is off."""
    if scenario.intermediate_eval.eval_every is None:
        return None
    from raydaa.evaluate.intermediate import IntermediateEvaluation

    return IntermediateEvaluation(scenario, reference_path)
