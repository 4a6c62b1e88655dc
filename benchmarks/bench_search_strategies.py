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


TARGETS = ("within_interval", "top_quarter", "hv90", "hv90_over_reference")
"""What a run must hold, checked after each ended trial (see `targets`)."""


def targets(grid_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid's answer, four ways: a finished configuration whose quality is at least
    the grid best's 95% interval low (the issue's criterion) or at least the grid's top
    quarter (its 75th percentile quality, a stricter one), and 90% of the grid front's
    hypervolume measured from the report's reference point (quality 0, 1.1 x the grid's
    largest KL) or from quality 0.5 (the reference policy's own win rate: only
    improvements over it count)."""
    from raydaa.report.analysis import hv_reference

    done = finished(grid_rows)
    best = max(done, key=lambda r: r["quality"])
    qualities = sorted(r["quality"] for r in done)
    top_quarter = statistics.quantiles(qualities, n=4)[2] if len(qualities) > 1 else qualities[0]
    report_ref = hv_reference(grid_rows)
    over_ref = (0.5, report_ref[1])
    return {
        "best": {k: best[k] for k in ("beta", "lr", "quality", "quality_low", "quality_high",
                                      "kl")},
        "quality": {"within_interval": best["quality_low"], "top_quarter": top_quarter},
        "hv_reference": {"hv90": report_ref, "hv90_over_reference": over_ref},
        "grid_hv": {"hv90": front_hv(grid_rows, report_ref),
                    "hv90_over_reference": front_hv(grid_rows, over_ref)},
    }


def trajectory(rows: list[dict[str, Any]], total_steps: int, goal: dict[str, Any]) -> dict[str, Any]:
    """Compute spent (device-seconds, optimizer steps, trials) when the run, its trials
    taken in the order they ended, first held each target; None where it never did."""
    seconds = steps = 0.0
    hits: dict[str, Any] = {name: None for name in TARGETS}
    for i, row in enumerate(rows):
        seconds += row["device_seconds"] or 0.0
        steps += steps_of(row, total_steps)
        done = finished(rows[: i + 1])
        held = {name: any(r["quality"] >= q for r in done)
                for name, q in goal["quality"].items()}
        held |= {name: front_hv(done, ref) >= HV_SHARE * goal["grid_hv"][name]
                 for name, ref in goal["hv_reference"].items()}
        for name in TARGETS:
            if hits[name] is None and held[name]:
                hits[name] = {"seconds": seconds, "steps": steps, "trials": i + 1}
    best = max(finished(rows), key=lambda r: r["quality"], default=None)
    return {
        "hits": hits, "seconds": seconds, "steps": steps, "trials": len(rows),
        "counts": {s: sum(r["status"] == s for r in rows) for s in
                   ("finished", "pruned", "failed", "diverged")},
        "best": None if best is None else {k: best[k] for k in ("beta", "lr", "quality", "kl")},
        "configs": [(r["beta"], r["lr"], r["status"]) for r in rows],
    }


def analyse(work: Path, methods: list[str], total_steps: int) -> dict[str, Any]:
    """Every method's grid and Optuna runs under `work`, from their results stores."""
    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space

    scenario = load_scenario("tiny")
    out: dict[str, Any] = {}
    for method in methods:
        if not (work / method / "grid").exists():
            continue
        grid_rows = ended_in_order(work / method / "grid", method)
        goal = targets(grid_rows)
        entry = {"grid_size": len(load_method_space(method, scenario).grid()), "goal": goal,
                 "grid": trajectory(grid_rows, total_steps, goal), "runs": {}}
        for run in sorted(p for p in (work / method).iterdir() if p.name != "grid"):
            name, seed = run.name.rsplit("-s", 1)
            entry["runs"][f"{name}/{seed}"] = trajectory(ended_in_order(run, method),
                                                         total_steps, goal)
        out[method] = entry
    return out


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
    common.output_arguments(parser, Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--methods", nargs="+", default=["dpo", "nca"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num-trials", type=int, default=4,
                        help="trials of each Optuna run (default 4)")
    parser.add_argument("--eval-every", type=int, default=6,
                        help="steps between intermediate evaluations (of 24)")
    parser.add_argument("--from-work", default=None,
                        help="run nothing: analyse the sweeps of an earlier run's work dir")
    args = parser.parse_args(argv)

    command = shlex.join(["python", "benchmarks/bench_search_strategies.py",
                          *(argv or sys.argv[1:])])
    if args.from_work:
        work = Path(args.from_work)
        spaces = work / "search_spaces"
    else:
        work = Path(tempfile.mkdtemp(prefix="bench_search_strategies-"))
        spaces = make_spaces(work, args.methods, args.eval_every)
        run_all(work, spaces, args)
    os.environ["RAYDAA_SEARCH_SPACES"] = str(spaces)
    from raydaa.config.scenario import load_scenario
    from raydaa.train.stages import recipe_steps

    total_steps = recipe_steps(load_scenario("tiny").align, 1500)
    report = {"command": command, "machine": common.machine(), "work": str(work),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "num_trials": args.num_trials, "seeds": args.seeds, "eval_every": args.eval_every,
              "total_steps": total_steps, "note": args.note,
              "methods": analyse(work, args.methods, total_steps)}
    common.publish(report, render, args.json, args.out or None)
    return 0


def run_all(work: Path, spaces: Path, args: argparse.Namespace) -> None:
    """Every sweep: per method the grid, then each strategy once per seed."""
    work, base, logs = common.work_dirs("bench_search_strategies", args.results, work)
    env = common.bench_env(spaces, Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    print(f"work dir {work} (analyse it again with --from-work)", flush=True)
    common.ensure_reference(base, env, "sft", logs)
    for method in args.methods:
        common.ensure_cache(base, env, method, logs)
    for method in args.methods:
        run_sweep(["--method", method, "--mode", "grid"], base, work / method / "grid", env,
                  logs / f"{method}-grid.log")
        for name, extra in STRATEGIES.items():
            for seed in args.seeds:
                flags = ["--method", method, "--mode", "optuna", "--num-trials",
                         str(args.num_trials), "--seed", str(seed), "--no-warm-start", *extra]
                run_sweep(flags, base, work / method / f"{name}-s{seed}", env,
                          logs / f"{method}-{name}-s{seed}.log")
                print(f"{method} {name} seed {seed} done", flush=True)


TARGET_TITLES = {
    "within_interval": "a config within the grid best's 95% interval",
    "top_quarter": "a config in the grid's top quarter",
    "hv90": "90% of the grid front's hypervolume (from quality 0)",
    "hv90_over_reference": "90% of the grid front's hypervolume over the reference policy (from quality 0.5)",
}


def _share(hits: list[dict[str, Any] | None], total: float, key: str) -> str:
    values = [h[key] / total for h in hits if h is not None]
    if not values:
        return f"never (0 of {len(hits)})"
    parts = ", ".join(f"{v:.0%}" for v in values)
    return f"{statistics.median(values):.0%} ({len(values)}/{len(hits)}: {parts})"


def render(r: dict[str, Any]) -> str:
    lines = [
        f"## `raydaa search` strategies, really run: compute to the grid's answer ({r['date']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']}. Nothing else running; Ray workers at nice 0.",
        "",
        f"Setup: `tiny` shrunk through `$RAYDAA_SEARCH_SPACES` (align global batch "
        f"{GLOBAL_BATCH}, micro batch {MICRO_BATCH}: {r['total_steps']} steps a trial; "
        f"{NUM_PROMPTS} evaluation prompts; an intermediate evaluation every "
        f"{r['eval_every']} steps on 32 prompts, what ASHA stops trials on, grace period 1, "
        f"reduction factor 3), each method's shipped tiny grid (the grid's trials also make "
        f"the intermediate evaluations, ~0.4 s each). Optuna runs: {r['num_trials']} trials "
        f"each, seeds {r['seeds']}, TPE, no warm start. Every sweep runs as many trials at "
        "once as the machine holds (2). Compute = the ended trials' `device_seconds` "
        "(start-up, training, evaluation; a pruned trial's until it was stopped), in the "
        "order they ended; steps = their optimizer steps. Each cell: the median share of "
        "the full grid's compute at which the runs first held the target (runs that did / "
        "runs, and each run's share); a grid sweep knows its answer only after its last "
        "point, so the full grid is 100%.",
        "",
    ]
    if r.get("note"):
        lines += [r["note"], ""]
    for method, m in r["methods"].items():
        g, goal = m["grid"], m["goal"]
        best = goal["best"]
        lines += [
            f"### {method.upper()}: grid of {m['grid_size']}: {g['seconds']:.0f} device-s, "
            f"{g['steps']:.0f} steps",
            "",
            f"Grid best: β {best['beta']:g}, lr {best['lr']:g}, quality {best['quality']:.3f} "
            f"[{best['quality_low']:.3f}, {best['quality_high']:.3f}], KL {best['kl']:.2f}. "
            f"Targets: quality ≥ {goal['quality']['within_interval']:.3f} (interval low), "
            f"≥ {goal['quality']['top_quarter']:.3f} (top quarter); hypervolume ≥ 90% of "
            f"{goal['grid_hv']['hv90']:.3f} (from quality 0, KL "
            f"{goal['hv_reference']['hv90'][1]:.2f}) and of "
            f"{goal['grid_hv']['hv90_over_reference']:.3f} (from quality 0.5).",
            "",
        ]
        runs_by: dict[str, list[dict[str, Any]]] = {"grid (its own order)": [g]}
        for key, run in m["runs"].items():
            runs_by.setdefault(key.split("/")[0], []).append(run)
        for unit, total in (("seconds", g["seconds"]), ("steps", g["steps"])):
            lines += [f"Share of the grid's {'device-seconds' if unit == 'seconds' else 'optimizer steps'} "
                      "spent until the target was held:", "",
                      "| strategy | " + " | ".join(TARGET_TITLES[t] for t in TARGETS) + " |",
                      "|---" * (len(TARGETS) + 1) + "|"]
            for name, runs in runs_by.items():
                cells = [_share([run["hits"][t] for run in runs], total, unit) for t in TARGETS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Whole runs (device-s, steps, trials finished / pruned; best found):", ""]
        for key, run in m["runs"].items():
            b = run["best"]
            found = "none" if b is None else (f"β {b['beta']:.3g}, lr {b['lr']:.3g}: "
                                              f"{b['quality']:.3f}, KL {b['kl']:.2f}")
            tried = ", ".join(f"({bb:.3g}, {lr:.3g}, {st})" for bb, lr, st in run["configs"])
            lines.append(f"- {key}: {run['seconds']:.0f} s, {run['steps']:.0f} steps, "
                         f"{run['counts']['finished']} / {run['counts']['pruned']}; best {found}; "
                         f"tried {tried}")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
