"""What the four studies share: namespaces, the resumable sweep loop, the output directory.

Namespace: one reference policy and one results store. The scenario's own
(`<results>/<scenario>/`, where `raydaa search` writes) is the main one. A question that
compares initializations (RQ1: base vs SFT model; RQ4: SFT on 1-100% of the SFT data)
gives each initialization a sibling namespace `<results>/<scenario>@<label>/` (label
`base`, `sft10pct`, ...): a scenario named `<scenario>@<label>` with its own
reference.json, reference cache, Tune runs and store, so `raydaa report --scenario
tiny@sft10pct` reads it like any scenario. Across those namespaces quality must be measured
against the same answers: a judge whose baseline is the reference policy's own samples
(`sft_policy`, tiny's) is switched there to the validation pairs' chosen answers.

Resumable: a configuration counts as done when its namespace's store holds a row with the
same method, β, lr, λ, SFT weight, γ/β, epochs and normalization (finished, diverged or
failed; `retry_failed` reruns failed ones). A sweep runs only its configurations without
one, so a re-run skips what is complete, and a configuration two questions share (RQ2's
ORPO/ASFT grids are RQ3's) runs once.

No Ray here: `runner` (ray_runner.RayRunner, or a fake in tests) trains references and
runs trials; this module decides what to run and reads the store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from raydaa.config.scenario import Scenario
from raydaa.config.search_space import CONFIG_KEYS, MethodSpace, load_method_space
from raydaa.io import storage
from raydaa.io.results_store import read_store, store_root
from raydaa.report.select import Row

DONE = ("finished", "diverged", "failed")
"""Statuses that make a configuration done (a failure is a result, listed in the tables)."""
Config = dict[str, Any]


class StudyError(Exception):
    """The study cannot go on; the message says what is missing and what to run."""


# ---------------------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    label: str
    """"" for the scenario's own namespace; else `base` or `sft<percent>pct`."""
    init: str = "sft"
    """Reference policy: sft (trained on `fraction` of the SFT data) or base (no SFT)."""
    fraction: float | None = 1.0
    """Share of the SFT data; None for the base model."""

    @property
    def main(self) -> bool:
        return not self.label

    def scenario_name(self, scenario: str) -> str:
        return scenario if self.main else f"{scenario}@{self.label}"

    def describe(self) -> str:
        if self.main:
            return "the scenario's reference"
        if self.init == "base":
            return "the base model (no SFT)"
        return f"SFT on {self.fraction * 100:g}% of the SFT data"


MAIN = Namespace("")
BASE = Namespace("base", "base", None)


def sft_namespace(fraction: float) -> Namespace:
    if not 0.01 <= fraction <= 1.0:
        raise ValueError(f"SFT fraction must be in [0.01, 1], got {fraction}")
    return Namespace(f"sft{round(fraction * 100, 6):g}pct", "sft", fraction)


def namespace_scenario(scenario: Scenario, ns: Namespace) -> Scenario:
    """The scenario as a namespace runs it: renamed `<scenario>@<label>`, and judged against
    the validation pairs' chosen answers where the scenario's judge would compare with the
    namespace's own reference (then qualities of different references would not compare)."""
    if ns.main:
        return scenario
    judge = scenario.judge
    if judge is not None and judge.baseline == "sft_policy":
        judge = dataclasses.replace(judge, baseline="chosen")
    return dataclasses.replace(scenario, name=ns.scenario_name(scenario.name), judge=judge)


def reference_path(results: str, scenario: str) -> str:
    """The reference registry raydaa.train.stages.run_sft writes."""
    return storage.join(results, scenario, "reference.json")


def read_reference(results: str, scenario: str) -> dict[str, Any] | None:
    text = storage.read_text(reference_path(results, scenario))
    return json.loads(text) if text is not None else None


def reference_matches(record: dict[str, Any] | None, ns: Namespace, seed: int) -> bool:
    """Whether a registered reference is the one `ns` stands for (run_sft's own test)."""
    if record is None:
        return False
    wanted = {"init": ns.init, "fraction": None if ns.init == "base" else ns.fraction}
    return all(record.get(k) == v for k, v in wanted.items()) and record.get("seed") == seed


# ---------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------


def _missing_value(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_config(row: Row, config: Config) -> bool:
    """Whether a store row ran `config` (floats equal to a relative 1e-9)."""
    for key in CONFIG_KEYS:
        a, b = row.get(key), config.get(key)
        if _missing_value(a) or _missing_value(b):
            if not (_missing_value(a) and _missing_value(b)):
                return False
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif a != b:
            return False
    return True


def config_of(row: Row) -> Config:
    """The configuration a store row ran, as a sweep configuration."""
    return {k: row.get(k) for k in CONFIG_KEYS}


def smoke_space(space: MethodSpace) -> MethodSpace:
    """A space cut for a smoke run: the two largest β ≤ 1 (β = 1 and the mildest tempering
    for ORPO/ASFT; else the smallest β), the largest lr and λ (λ = 1 is the paper's best),
    the fewest epochs."""
    low = [b for b in space.betas if b <= 1.0]
    return dataclasses.replace(
        space,
        betas=low[-2:] if low else space.betas[:1],
        lrs=space.lrs[-1:],
        lambdas=space.lambdas[-1:],
        epochs=space.epochs[:1],
    )


@dataclass
class Sweep:
    """Trials of one namespace run together (one Tune run), in named parts that the
    question's tables read separately (e.g. "orpo/base_init")."""

    key: str
    """e.g. "rq2/beta1": progress lines and the Tune experiment's name."""
    namespace: Namespace
    parts: dict[str, list[Config]] = field(default_factory=dict)

    @property
    def configs(self) -> list[Config]:
        unique: list[Config] = []
        for configs in self.parts.values():
            unique += [c for c in configs if not any(same_config(c, u) for u in unique)]
        return unique


SweepRows = dict[str, list[Row]]
"""part -> the store rows of the part's configurations (every status)."""


# ---------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------


class Runner(Protocol):
    """What runs (ray_runner.RayRunner; tests pass a fake that writes rows)."""

    def train_reference(
        self, scenario: Scenario, results: str, *, init: str, fraction: float | None
    ) -> dict[str, Any]: ...

    def run_configs(
        self, scenario: Scenario, results: str, configs: list[Config], name: str
    ) -> None: ...

    def evaluate_reference(self, scenario: Scenario, record: dict[str, Any]) -> dict[str, Any]: ...


QUALITY_KEYS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high")


class Study:
    def __init__(
        self,
        scenario: Scenario,
        results: str,
        runner: Runner | None = None,
        *,
        smoke: bool = False,
        retry_failed: bool = False,
        dry_run: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        if runner is None and not dry_run:
            raise ValueError("a study that runs needs a runner")
        self.scenario, self.results = scenario, storage.resolve(results)
        self.runner, self.smoke, self.retry_failed = runner, smoke, retry_failed
        self.dry_run, self._log = dry_run, log
        self.planned_trials = 0
        """Trials a dry run would start."""
        self.planned_references: list[str] = []
        """References a dry run would train or register."""

    def log(self, message: str) -> None:
        self._log(message)

    # -- reading ------------------------------------------------------------------------

    def scenario_for(self, ns: Namespace) -> Scenario:
        return namespace_scenario(self.scenario, ns)

    def store(self, ns: Namespace) -> str:
        return store_root(self.results, self.scenario_for(ns).name)

    def rows(self, ns: Namespace) -> list[Row]:
        return read_store(self.results, self.scenario_for(ns).name).to_pylist()

    def space(self, method: str, setup: str = "two_stage") -> MethodSpace:
        """The method's space from the search-space folders (cut by `smoke`)."""
        space = load_method_space(method, self.scenario, setup)
        return smoke_space(space) if self.smoke else space

    def missing(self, configs: list[Config], rows: list[Row]) -> list[Config]:
        done = ("finished", "diverged") if self.retry_failed else DONE
        ready = [r for r in rows if r.get("status") in done]
        return [c for c in configs if not any(same_config(r, c) for r in ready)]

    # -- references ---------------------------------------------------------------------

    def reference(self, ns: Namespace) -> dict[str, Any] | None:
        return read_reference(self.results, self.scenario_for(ns).name)

    def reference_plan(self, ns: Namespace) -> tuple[str, str] | None:
        """What ensure_reference would do, (action, description); None when the reference
        is there. Actions: train (SFT or the base model, in `ns`), reuse (the 100% SFT
        namespace takes the scenario's own SFT checkpoint), train_main (the scenario has
        no reference yet: train it, then reuse it)."""
        scenario = self.scenario_for(ns)
        if ns.main:
            if self.reference(ns):
                return None
            return "train", f"train SFT (100%) as the reference of {scenario.name}"
        if reference_matches(self.reference(ns), ns, scenario.seed):
            return None
        if ns.init == "sft" and ns.fraction == 1.0:
            main = read_reference(self.results, self.scenario.name)
            if main is None:
                return "train_main", (
                    f"train SFT (100%) as the reference of {self.scenario.name} and reuse it "
                    f"for {scenario.name}"
                )
            if reference_matches(main, ns, scenario.seed):
                return "reuse", f"reuse {self.scenario.name}'s SFT checkpoint for {scenario.name}"
        if ns.init == "base":
            return "train", f"register the base model as the reference of {scenario.name}"
        return "train", f"train SFT on {ns.fraction * 100:g}% of the SFT data for {scenario.name}"

    def note_reference(self, ns: Namespace) -> None:
        """Dry run: say (once) what ensure_reference would do for `ns`."""
        plan = self.reference_plan(ns)
        if plan and plan[1] not in self.planned_references:
            self.planned_references.append(plan[1])
            self.log(f"  reference: would {plan[1]}")

    def ensure_reference(self, ns: Namespace) -> dict[str, Any]:
        """The namespace's reference, trained or registered first if missing. The 100% SFT
        namespace reuses the scenario's own SFT checkpoint when it is one (same seed), so
        the 100% SFT model is trained once."""
        plan = self.reference_plan(ns)
        if plan is None:
            return self.reference(ns)
        action, text = plan
        self.log(f"  reference: {text} ...")
        if action == "train_main":
            self.ensure_reference(MAIN)
            action = "reuse"
        scenario = self.scenario_for(ns)
        if action == "reuse":
            main = read_reference(self.results, self.scenario.name)
            record = main | {
                "scenario": scenario.name,
                "copied_from": reference_path(self.results, self.scenario.name),
            }
            storage.write_text(
                reference_path(self.results, scenario.name), json.dumps(record, indent=2)
            )
            return record
        start = time.perf_counter()
        init, fraction = ("sft", 1.0) if ns.main else (ns.init, ns.fraction)
        record = self.runner.train_reference(scenario, self.results, init=init, fraction=fraction)
        self.log(f"  reference: {record['path']} ({_minutes(start)})")
        return record

    def reference_quality(self, ns: Namespace) -> dict[str, Any] | None:
        """Quality and KL of the namespace's reference itself (no alignment), judged like
        its trials; cached in `<namespace>/reference_quality.json` per reference and judge.
        None in a dry run without a cached value."""
        scenario = self.scenario_for(ns)
        record = self.reference(ns)
        if record is None and not self.dry_run:
            record = self.ensure_reference(ns)
        path = storage.join(self.results, scenario.name, "reference_quality.json")
        key = json.dumps(
            {
                "reference": record and record["path"],
                "judge": scenario.judge and dataclasses.asdict(scenario.judge),
                "generation": scenario.generation and dataclasses.asdict(scenario.generation),
            },
            sort_keys=True,
        )
        text = storage.read_text(path)
        cached = json.loads(text) if text is not None else None
        if record is not None and cached is not None and cached.get("key") == key:
            return cached["metrics"]
        if self.dry_run:
            self.log(f"  would evaluate the reference of {scenario.name} (no alignment)")
            return None
        self.log(f"  evaluating the reference of {scenario.name} (no alignment) ...")
        start = time.perf_counter()
        out = self.runner.evaluate_reference(scenario, record)
        metrics = {k: out.get(k, math.nan) for k in QUALITY_KEYS}
        storage.write_text(path, json.dumps({"key": key, "metrics": metrics}, indent=2))
        self.log(f"  reference quality {metrics['quality']:.3f} ({_minutes(start)})")
        return metrics

    # -- sweeps -------------------------------------------------------------------------

    def execute(self, rq: str, sweeps: list[Sweep]) -> dict[str, SweepRows]:
        """Run each sweep's configurations that have no row yet; returns, per sweep key,
        each part's rows. One progress line per sweep as it starts and ends."""
        out: dict[str, SweepRows] = {}
        for i, sweep in enumerate(sweeps, 1):
            tag = f"[{rq} {i}/{len(sweeps)}] {sweep.key}"
            ns = sweep.namespace
            name = self.scenario_for(ns).name
            configs = sweep.configs
            rows = self.rows(ns)
            todo = self.missing(configs, rows)
            done = len(configs) - len(todo)
            verb = "would run" if self.dry_run else "running"
            self.log(
                f"{tag}: {len(configs)} configs in {name} ({ns.describe()}), {done} already in "
                f"the store; " + (f"{verb} {len(todo)}" if todo else "nothing to run")
            )
            if todo and self.dry_run:
                self.note_reference(ns)
                self.planned_trials += len(todo)
            elif todo:
                self.ensure_reference(ns)
                before = {r["trial_id"] for r in rows}
                start = time.perf_counter()
                key = sweep.key.replace("/", "-")
                self.runner.run_configs(self.scenario_for(ns), self.results, todo, key)
                rows = self.rows(ns)
                # this sweep's rows only: another study may write the same namespace
                new = [
                    r
                    for r in rows
                    if r["trial_id"] not in before and any(same_config(r, c) for c in todo)
                ]
                lost = [c for c in todo if not any(same_config(r, c) for r in new)]
                if lost:
                    raise StudyError(
                        f"{tag}: the sweep ended but {len(lost)} of {len(todo)} configs have no "
                        f"row in {self.store(ns)}, e.g. {_short(lost[0])}; re-run to retry them"
                    )
                counts = Counter(r["status"] for r in new)
                self.log(
                    f"{tag}: done in {_minutes(start)}: "
                    + ", ".join(f"{counts.get(s, 0)} {s}" for s in DONE)
                )
            out[sweep.key] = {
                part: [r for r in rows if any(same_config(r, c) for c in part_configs)]
                for part, part_configs in sweep.parts.items()
            }
        return out

    # -- outputs ------------------------------------------------------------------------

    def output(self, rq: str):
        """Where `rq` writes: `<results>/<scenario>/study/<rq>/` (every file atomic)."""
        from raydaa.report.build import Sink

        return Sink(storage.join(self.results, self.scenario.name, "study", rq))


def write_chart(sink, chart) -> list[str]:
    """A report chart as PNG and HTML (plotly.js written once beside the pages)."""
    from raydaa.report.build import _write_plotly_js
    from raydaa.report.plots import render_html, render_png

    return [
        _write_plotly_js(sink),
        sink.write(f"{chart.name}.png", render_png(chart)),
        sink.write(f"{chart.name}.html", render_html(chart, "directory")),
    ]


def _minutes(start: float) -> str:
    return f"{(time.perf_counter() - start) / 60:.1f} min"


def _short(config: Config) -> str:
    return ", ".join(f"{k}={config.get(k)}" for k in CONFIG_KEYS if config.get(k) is not None)
