"""Seed replicates: a method's top-K configurations rerun with other training seeds.

    plan     the method's finished two-stage search rows (each configuration's row at its
             lowest seed: raydaa.config.search_space.search_rows), best first as in
             raydaa.report.select.best_key (quality, then lower KL, then trial id); the
             top K configurations x seeds scenario.seed+1 ... scenario.seed+N-1 (the
             search's own row is seed scenario.seed: N seeds per configuration in all),
             less the (configuration, seed) pairs the store holds already
    run      one Ray Tune sweep over those points, the trials of `raydaa search` (same
             driver, store callback, report refresh), each with `seed` in its config:
             its training seed (data order, anything random), its row's `seed` column and
             its name (`dpo-b0.1-lr1e-06-s1-<id>`); evaluation samples with the scenario's
             seed, as every trial's does

A replicate never competes for "best" (the report selects among search rows); it measures
how far a configuration's quality moves with the seed alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raydaa.config.defaults import DEFAULT_RESULTS, DEFAULT_SCENARIO
from raydaa.config.search_space import CONFIG_KEYS, config_identity, search_rows

Row = dict[str, Any]
DONE = ("finished", "diverged", "failed")
"""Statuses that make a (configuration, seed) done: a failure is a result, as in a study."""


class ReplicateError(Exception):
    """Nothing to replicate from; the message names the command to run first."""


@dataclass
class ReplicatePlan:
    configs: list[Row]
    """The top-K search rows, best first."""
    seeds: list[int]
    """Every seed of each configuration, the search's own first."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Trial configs (CONFIG_KEYS + seed) still to run."""

    @property
    def done(self) -> int:
        return len(self.configs) * (len(self.seeds) - 1) - len(self.pending)


def replicate_seeds(scenario_seed: int, n: int) -> list[int]:
    """The N seeds of a configuration: the search's own, then the next N-1 integers."""
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return [scenario_seed + i for i in range(n)]


def top_configs(rows: list[Row], method: str, k: int) -> list[Row]:
    """The method's best K two-stage configurations, one search row each, best first."""
    from raydaa.report.select import best_key, usable, variant

    if k < 1:
        raise ValueError(f"--top must be >= 1, got {k}")
    mine = [r for r in search_rows([r for r in rows if r.get("method") == method])
            if variant(r) == method and usable(r)]  # fmt: skip
    best: dict[tuple, Row] = {}
    for row in sorted(mine, key=best_key):  # a repeated search row: its best one stands
        best.setdefault(config_identity(row), row)
    return list(best.values())[:k]


def plan_replicates(rows: list[Row], method: str, *, top: int, seeds: int, scenario_seed: int,
                    scenario: str, results: str, retry_failed: bool = False) -> ReplicatePlan:  # fmt: skip
    """What `raydaa replicate` runs; ReplicateError when the method has no finished row."""
    configs = top_configs(rows, method, top)
    all_seeds = replicate_seeds(scenario_seed, seeds)
    if not configs:
        raise ReplicateError(
            f"no finished two-stage {method} trial with a quality in the results store of "
            f"scenario {scenario!r} under {results}: run `raydaa search --method {method} "
            f"--scenario {scenario} --results {results}` first"
        )
    done = ("finished", "diverged") if retry_failed else DONE
    have = {(config_identity(r), r.get("seed")) for r in rows if r.get("status") in done}
    pending = [
        {k: c.get(k) for k in CONFIG_KEYS} | {"seed": s}
        for c in configs
        for s in all_seeds[1:]
        if (config_identity(c), s) not in have
    ]
    return ReplicatePlan(configs, all_seeds, pending)


def describe(plan: ReplicatePlan) -> list[str]:
    """One line per configuration: its knobs, search quality and seeds."""
    from raydaa.report.tables import hp

    lines = []
    for c in plan.configs:
        waiting = sorted(p["seed"] for p in plan.pending if config_identity(p) == config_identity(c))
        lines.append(
            f"  {c['method']} β={hp(c['beta'])} lr={hp(c['lr'])}: quality {c['quality']:.4f} "
            f"(seed {c.get('seed')}); seeds to run: {waiting or 'none (all in the store)'}"
        )
    return lines


@dataclass
class ReplicateSettings:
    method: str
    top: int = 1
    """Configurations to replicate, best first."""
    seeds: int = 3
    """Seeds per configuration in all, the search's own included."""
    scenario: str = DEFAULT_SCENARIO
    results: str = DEFAULT_RESULTS
    storage: str | None = None
    """Ray Tune storage path; default <results>/<scenario>/tune."""
    resume: bool = False
    """Restore the saved Tune run of the same --top/--seeds (its unfinished trials resume
    from their checkpoints); without it, only the seeds missing from the store run."""
    retry_failed: bool = False
    max_concurrent_trials: int | None = None


def load_plan(settings: ReplicateSettings) -> ReplicatePlan:
    """The plan from the store as it is now (no Ray)."""
    from raydaa.config.scenario import load_scenario
    from raydaa.io import storage
    from raydaa.io.results_store import read_store

    scenario = load_scenario(settings.scenario)
    results = storage.resolve(settings.results)
    rows = read_store(results, scenario.name, settings.method).to_pylist()
    return plan_replicates(
        rows, settings.method, top=settings.top, seeds=settings.seeds,
        scenario_seed=scenario.seed, scenario=scenario.name, results=results,
        retry_failed=settings.retry_failed,
    )  # fmt: skip


def run_replicates(
    settings: ReplicateSettings, callbacks: Sequence[Any] = (), plan: ReplicatePlan | None = None
) -> dict[str, Any]:
    """Run (or resume) the replicate sweep; returns where things are. Ray must be connected."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table, as raydaa search
    from ray import tune

    from raydaa.config.scenario import load_scenario
    from raydaa.core.methods import METHOD_SPECS
    from raydaa.io import storage
    from raydaa.io.results_store import store_root
    from raydaa.sweep.capacity import concurrency
    from raydaa.sweep.pruning import has_ended
    from raydaa.sweep.tuner import points_sweep, sweep_run_config, sweep_trainable, tune_trial_name
    from raydaa.train.stages import prepare_alignment, scenario_root

    scenario = load_scenario(settings.scenario)
    results = storage.resolve(settings.results)
    plan = plan or load_plan(settings)
    name = f"{settings.method}-two_stage-replicates-top{settings.top}-seeds{settings.seeds}"
    storage_path = settings.storage or storage.join(scenario_root(results, scenario), "tune")
    path = f"{storage_path.rstrip('/')}/{name}"
    where = {
        "scenario": scenario.name,
        "method": settings.method,
        "seeds": ", ".join(map(str, plan.seeds)),
        "results_store": store_root(results, scenario.name),
        "tune_experiment": path,
    }
    resume = settings.resume and tune.Tuner.can_restore(path)
    if not plan.pending and not resume:
        return where | {"interrupted": False, "trials_ended": "0 of 0 (all in the store)"}
    inputs = prepare_alignment(
        scenario, results=results, needs_reference=METHOD_SPECS[settings.method].needs_reference
    )
    trainable = sweep_trainable(scenario, inputs, results)
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)  # fmt: skip
    else:
        at_once = settings.max_concurrent_trials or concurrency(scenario)
        param_space, tune_config = points_sweep(plan.pending, at_once, tune_trial_name)
        run_config = sweep_run_config(name, storage_path, results, scenario, callbacks=callbacks)
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=run_config)  # fmt: skip
    grid = tuner.fit()
    # a trial whose last result is an intermediate evaluation ("running") did not end
    ended = sum(1 for r in grid if r.error is not None or has_ended(r.metrics, None))
    expected = len(grid) if resume else len(plan.pending)
    return where | {"interrupted": ended < expected, "trials_ended": f"{ended} of {expected}"}
