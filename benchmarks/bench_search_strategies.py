"""Search efficiency, really run: how much compute each search strategy of `raydaa search`
spends before it holds the answer the full grid gives.

For each method (default DPO and NCA) on a shrunken `tiny` (through `$RAYDAA_SEARCH_SPACES`:
24 optimizer steps a trial, 64 evaluation prompts, an intermediate evaluation every 6 steps
on 32 of them), this runs, each from a fresh results directory sharing one reference and
one reference log-prob cache:

    grid               raydaa search --method M --mode grid            (every grid point)
    optuna             raydaa search --method M --mode optuna --num-trials N --seed S
    optuna+asha        ... --scheduler asha
    continuous+asha    ... --scheduler asha --space continuous

the Optuna strategies once per seed (default 0 1 2), every run with the sweep's own
concurrency (as many trials at once as the machine holds) and without warm start.

The grid's answer: its best finished configuration, with its quality's 95% interval, and
its Pareto front's hypervolume (quality up, KL down, from the grid's reference point:
quality 0 and 1.1 x the grid's largest KL). For every run, trials are taken in the order
they ended (their row's write time); after each, the compute spent so far is the sum of the
ended trials' `device_seconds` (training, evaluation, start-up; a pruned trial's until it
was stopped) and of their optimizer steps. Reported per strategy: the compute at which
(a) some finished trial's quality is at least the grid best's interval low, (b) the
finished trials' front reaches 90% of the grid front's hypervolume, as a share of the
full grid's compute (the grid knows its answer only once every point ran).

Usage (about 50 minutes on 2 otherwise idle cores with an existing reference):

    python benchmarks/bench_search_strategies.py [--results DIR] [--methods dpo nca]
        [--seeds 0 1 2] [--num-trials 4] [--eval-every 6] [--note TEXT]
        [--out benchmarks/RESULTS.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search_common as common  # noqa: E402

NUM_PROMPTS = 64
GLOBAL_BATCH, MICRO_BATCH = 64, 32
STRATEGIES = {
    "optuna": [],
    "optuna+asha": ["--scheduler", "asha"],
    "continuous+asha": ["--scheduler", "asha", "--space", "continuous"],
}
HV_SHARE = 0.9


def make_spaces(work: Path, methods: list[str], eval_every: int) -> Path:
    """The shipped search spaces with tiny shrunken (as the overhead benchmark's) and
    intermediate evaluations on; every method keeps its own tiny grid."""
    first = methods[0]
    root = common.make_spaces(work, method=first, betas=[0.0], lrs=[0.0],
                              num_prompts=NUM_PROMPTS, global_batch_size=GLOBAL_BATCH,
                              micro_batch_size=MICRO_BATCH)
    # make_spaces narrowed the first method's grid: put its shipped one back
    from raydaa.config.scenario import search_spaces_dir

    shipped = search_spaces_dir() / "methods" / f"{first}.yaml"
    (root / "methods" / f"{first}.yaml").write_text(shipped.read_text())
    tiny_path = root / "scenarios" / "tiny.yaml"
    tiny = yaml.safe_load(tiny_path.read_text())
    tiny["intermediate_eval"] = {"eval_every": eval_every, "eval_subset_prompts": 32}
    tiny_path.write_text(yaml.safe_dump(tiny))
    return root


def ended_in_order(results: Path, method: str) -> list[dict[str, Any]]:
    """The run's rows in the order their trials ended (row write time)."""
    from raydaa.io.results_store import read_store, store_dir

    directory = store_dir(results, "tiny") / method
    rows = read_store(results, "tiny", method).to_pylist()
    return sorted(rows, key=lambda r: (directory / f"{r['trial_id']}.parquet").stat().st_mtime)


def steps_of(row: dict[str, Any], total_steps: int) -> int:
    if row["status"] == "pruned":
        return int(row["eval_step"] or 0)
    if row["status"] == "diverged" and (row.get("diverged_step") or -1) > 0:
        return int(row["diverged_step"])
    return total_steps if row["status"] == "finished" else 0


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "finished" and math.isfinite(r["quality"])
            and math.isfinite(r["kl"])]


def front_hv(rows: list[dict[str, Any]], reference: tuple[float, float]) -> float:
    from raydaa.report.pareto import hypervolume

    done = finished(rows)
    return hypervolume([r["quality"] for r in done], [r["kl"] for r in done], reference)


def trajectory(rows: list[dict[str, Any]], total_steps: int, target: float, hv_target: float,
               reference: tuple[float, float]) -> dict[str, Any]:
    """Compute spent when the run first held (a) a configuration within the grid best's
    interval, (b) 90% of the grid front's hypervolume; None where it never did."""
    seconds = steps = 0.0
    out: dict[str, Any] = {"quality_at": None, "hv_at": None}
    for i, row in enumerate(rows):
        seconds += row["device_seconds"] or 0.0
        steps += steps_of(row, total_steps)
        seen = rows[: i + 1]
        if out["quality_at"] is None and any(r["quality"] >= target for r in finished(seen)):
            out["quality_at"] = {"seconds": seconds, "steps": steps, "trials": i + 1}
        if out["hv_at"] is None and front_hv(seen, reference) >= hv_target:
            out["hv_at"] = {"seconds": seconds, "steps": steps, "trials": i + 1}
    best = max(finished(rows), key=lambda r: r["quality"], default=None)
    return out | {
        "seconds": seconds, "steps": steps, "trials": len(rows),
        "counts": {s: sum(r["status"] == s for r in rows) for s in
                   ("finished", "pruned", "failed", "diverged")},
        "best": None if best is None else {k: best[k] for k in ("beta", "lr", "quality", "kl")},
        "hv": front_hv(rows, reference),
        "configs": [(r["beta"], r["lr"], r["status"]) for r in rows],
    }


def run_sweep(args: list[str], base: Path, dst: Path, env: dict[str, str], log: Path) -> float:
    results = common.fresh_results(base, dst)
    cmd = common.raydaa_cmd("search", "--results", str(results), *args)
    rc, wall, _, _ = common.run_ray_command(cmd, env, log)
    if rc != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"{shlex.join(cmd)} failed (rc {rc}); log {log}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=None,
                        help="results dir holding (or to hold) the tiny reference")
    parser.add_argument("--methods", nargs="+", default=["dpo", "nca"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num-trials", type=int, default=4,
                        help="trials of each Optuna run (default 4)")
    parser.add_argument("--eval-every", type=int, default=6,
                        help="steps between intermediate evaluations (of 24)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--json", default=None)
    parser.add_argument("--note", default="")
    parser.add_argument("--render", default=None,
                        help="only render the Markdown of a saved JSON report")
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0

    command = shlex.join(["python", "benchmarks/bench_search_strategies.py",
                          *(argv or sys.argv[1:])])
    work = Path(tempfile.mkdtemp(prefix="bench_search_strategies-"))
    base = Path(args.results).resolve() if args.results else work / "base"
    base.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir()
    spaces = make_spaces(work, args.methods, args.eval_every)
    env = common.bench_env(spaces, Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    partial = work / "partial.json"  # after every sweep: what ran so far (`--render`)
    print(f"work dir {work}; report so far in {partial}", flush=True)
    common.ensure_reference(base, env, "sft", logs)
    for method in args.methods:
        common.ensure_cache(base, env, method, logs)

    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space
    from raydaa.report.analysis import hv_reference
    from raydaa.train.stages import recipe_steps

    os.environ["RAYDAA_SEARCH_SPACES"] = str(spaces)
    scenario = load_scenario("tiny")
    total_steps = recipe_steps(scenario.align, 1500)
    report: dict[str, Any] = {"command": command, "machine": common.machine(),
                              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "num_trials": args.num_trials, "seeds": args.seeds,
                              "eval_every": args.eval_every, "total_steps": total_steps,
                              "note": args.note, "methods": {}}
    for method in args.methods:
        grid_size = len(load_method_space(method, scenario).grid())
        print(f"{method}: grid of {grid_size}", flush=True)
        grid_dir = work / method / "grid"
        wall = run_sweep(["--method", method, "--mode", "grid"], base, grid_dir, env,
                         logs / f"{method}-grid.log")
        grid_rows = ended_in_order(grid_dir, method)
        reference = hv_reference(grid_rows)
        best = max(finished(grid_rows), key=lambda r: r["quality"])
        target, hv_target = best["quality_low"], HV_SHARE * front_hv(grid_rows, reference)
        grid = trajectory(grid_rows, total_steps, target, hv_target, reference) | {"wall": wall}
        entry = {"grid_size": grid_size, "reference": reference, "target": target,
                 "grid_best": {k: best[k] for k in ("beta", "lr", "quality", "quality_low",
                                                     "quality_high", "kl")},
                 "grid_hv": front_hv(grid_rows, reference), "grid": grid, "runs": {}}
        for name, extra in STRATEGIES.items():
            for seed in args.seeds:
                dst = work / method / f"{name}-s{seed}"
                flags = ["--method", method, "--mode", "optuna", "--num-trials",
                         str(args.num_trials), "--seed", str(seed), "--no-warm-start", *extra]
                wall = run_sweep(flags, base, dst, env, logs / f"{method}-{name}-s{seed}.log")
                rows = ended_in_order(dst, method)
                run = trajectory(rows, total_steps, target, hv_target, reference)
                entry["runs"][f"{name}/{seed}"] = run | {"wall": wall}
                print(f"{method} {name} seed {seed}: {summary_line(run, grid)}", flush=True)
                report["methods"][method] = entry
                partial.write_text(json.dumps(report, indent=2, default=str))
    common.publish(report, render, args.json, args.out or None)
    return 0


def summary_line(run: dict[str, Any], grid: dict[str, Any]) -> str:
    def at(key: str) -> str:
        hit = run[key]
        if hit is None:
            return "never"
        return f"{hit['seconds']:.0f} s ({hit['seconds'] / grid['seconds']:.0%}) after {hit['trials']} trials"

    return (f"{run['trials']} trials {run['counts']}, within the grid best's interval: "
            f"{at('quality_at')}; 90% of its hypervolume: {at('hv_at')}")


def _share(hits: list[dict[str, Any] | None], total: float, key: str) -> str:
    values = [h[key] / total for h in hits if h is not None]
    if not values:
        return f"never (0 of {len(hits)})"
    med = statistics.median(values)
    parts = ", ".join(f"{v:.0%}" for v in values)
    return f"median {med:.0%} ({len(values)} of {len(hits)} seeds: {parts})"


def render(r: dict[str, Any]) -> str:
    lines = [
        f"## `raydaa search` strategies, really run: compute to the grid's answer ({r['date']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']}.",
        "",
        f"Setup: `tiny` shrunk through `$RAYDAA_SEARCH_SPACES` (align global batch "
        f"{GLOBAL_BATCH}, micro batch {MICRO_BATCH}: {r['total_steps']} steps a trial; "
        f"{NUM_PROMPTS} evaluation prompts; an intermediate evaluation every "
        f"{r['eval_every']} steps on 32 prompts, which ASHA stops trials on; grace period 1, "
        f"reduction factor 3), each method's shipped tiny grid. Optuna runs: "
        f"{r['num_trials']} trials each, seeds {r['seeds']}, no warm start. Every sweep "
        "runs as many trials at once as the machine holds (2). Compute = the ended trials' "
        "`device_seconds` (start-up, training, evaluation; a pruned trial's until it was "
        "stopped) in the order they ended; steps = their optimizer steps.",
        "",
    ]
    if r.get("note"):
        lines += [r["note"], ""]
    for method, m in r["methods"].items():
        g, best = m["grid"], m["grid_best"]
        lines += [
            f"### {method.upper()}: grid of {m['grid_size']}, {g['seconds']:.0f} device-s, "
            f"{g['steps']:.0f} steps",
            "",
            f"Grid best: β {best['beta']:g}, lr {best['lr']:g}, quality {best['quality']:.3f} "
            f"[{best['quality_low']:.3f}, {best['quality_high']:.3f}], KL {best['kl']:.2f}; "
            f"target quality ≥ {m['target']:.3f}. Grid front hypervolume "
            f"{m['grid_hv']:.3f} (reference quality {m['reference'][0]:g}, KL "
            f"{m['reference'][1]:.2f}); target {HV_SHARE:.0%} of it.",
            "",
            "| strategy | device-s to a config within the grid best's interval (share of "
            "the grid's) | steps to it (share) | device-s to 90% of the grid's hypervolume "
            "(share) | steps to it (share) | whole run: device-s, steps, trials (finished / "
            "pruned) |",
            "|---|---|---|---|---|---|",
        ]
        by_strategy: dict[str, list[dict[str, Any]]] = {}
        for key, run in m["runs"].items():
            by_strategy.setdefault(key.split("/")[0], []).append(run)
        lines.append(
            f"| grid | {_share([g['quality_at']], g['seconds'], 'seconds')} | "
            f"{_share([g['quality_at']], g['steps'], 'steps')} | "
            f"{_share([g['hv_at']], g['seconds'], 'seconds')} | "
            f"{_share([g['hv_at']], g['steps'], 'steps')} | {g['seconds']:.0f}, "
            f"{g['steps']:.0f}, {g['trials']} ({g['counts']['finished']} / "
            f"{g['counts']['pruned']}) |")
        for name, runs in by_strategy.items():
            q = [run["quality_at"] for run in runs]
            h = [run["hv_at"] for run in runs]
            whole = "; ".join(f"{run['seconds']:.0f}, {run['steps']:.0f}, {run['trials']} "
                              f"({run['counts']['finished']} / {run['counts']['pruned']})"
                              for run in runs)
            lines.append(
                f"| {name} | {_share(q, g['seconds'], 'seconds')} | "
                f"{_share(q, g['steps'], 'steps')} | {_share(h, g['seconds'], 'seconds')} | "
                f"{_share(h, g['steps'], 'steps')} | {whole} |")
        lines += ["", "Configurations each run tried (β, lr, status), in the order they ended:", ""]
        for key, run in m["runs"].items():
            tried = ", ".join(f"({b:.3g}, {lr:.3g}, {s})" for b, lr, s in run["configs"])
            lines.append(f"- {key}: {tried}")
        lines.append("")
    lines += [
        "Shares are of the full grid's compute: a grid sweep knows its best only after its "
        "last point. The grid's own row says when, in its run order, it first held the "
        "answer.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
