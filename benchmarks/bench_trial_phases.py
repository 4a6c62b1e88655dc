"""Where one tiny trial's time goes: a lone trial of `raydaa search` (a one-point DPO grid
on the shrunken `tiny` of the overhead benchmark), phase by phase from its results-store row
(raydaa/train/timeline.py), and the CPU-seconds of every process the sweep started.

    launch     trial start -> its Ray Train worker process exists (Train controller
               actor, placement group, worker actor); ~0 when the trial trains in its
               driver (the default for tiny; `--ray-train` for the other path)
    imports    worker process start -> training function runs (Ray Train, torch,
               transformers imports; the torch process group); in the driver: the
               process group
    engine     op check, model load, deepspeed.initialize, data load
    train      the optimizer steps (and their reports to Ray Train)
    save       the final DeepSpeed checkpoint and HF export
    teardown   the final report -> the run's result in the trial (Ray Train shutting down)
    eval       the final evaluation (sampling, judge, KL)

`--report-poll S` sets RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (how often Ray Train's controller
collects reports); 2 is Ray Train's default, which raydaa replaces with 0.2.

Usage (about 2 minutes a run on 2 otherwise idle cores with an existing reference):

    python benchmarks/bench_trial_phases.py [--results DIR] [--report-poll 2]
        [--runs 1] [--note TEXT] [--out benchmarks/RESULTS.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search_common as common  # noqa: E402

METHOD, BETA, LR = "dpo", 0.1, 3e-5


def one_trial(base: Path, work: Path, env: dict[str, str], logs: Path) -> dict[str, Any]:
    from raydaa.io.results_store import PHASE_COLUMNS

    results = common.fresh_results(base, work)
    cmd = common.raydaa_cmd("search", "--method", METHOD, "--mode", "grid",
                            "--results", str(results))
    rc, wall, busy, _ = common.run_ray_command(cmd, env, logs / f"{work.name}.log")
    if rc != 0:
        raise SystemExit(f"raydaa search failed (rc {rc}); log {logs / f'{work.name}.log'}")
    (row,) = common.store_rows(results, METHOD)
    by_name: dict[str, list[float]] = {}
    for _, name, seconds in busy.cpu_by_process:
        key = name if name.startswith("ray::") else name.split(" ")[0].rsplit("/", 1)[-1]
        by_name.setdefault(key[:40], []).append(seconds)
    return {"wall": wall, "cpu_seconds": busy.cpu_seconds,
            "device_seconds": row["device_seconds"], "final_loss": row["final_loss"],
            "quality": row["quality"], "phases": {k: row[k] for k in PHASE_COLUMNS},
            "cpu_by_process": {k: [sum(v), len(v)] for k, v in by_name.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.output_arguments(parser, Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--report-poll", type=float, default=None,
                        help="RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for the run (default: raydaa's)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ray-train", action="store_true",
                        help="the trial trains through Ray Train (resources.in_process: false)")
    args = parser.parse_args(argv)

    command = shlex.join(["python", "benchmarks/bench_trial_phases.py", *(argv or sys.argv[1:])])
    work, base, logs = common.work_dirs("bench_trial_phases", args.results)
    spaces = common.make_spaces(work, method=METHOD, betas=[BETA], lrs=[LR], num_prompts=64,
                                in_process=not args.ray_train)
    env = common.bench_env(spaces, Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    if args.report_poll is not None:
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = f"{args.report_poll:g}"
    common.ensure_reference(base, env, "sft", logs)
    common.ensure_cache(base, env, METHOD, logs)
    runs = [one_trial(base, work / f"run{i}", env, logs) for i in range(args.runs)]
    report = {"command": command, "machine": common.machine(), "note": args.note,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "report_poll": args.report_poll, "ray_train": args.ray_train, "runs": runs}
    common.publish(report, render, args.json, args.out or None)
    return 0


def render(r: dict[str, Any]) -> str:
    poll = ("Ray Train's default 2 s" if r["report_poll"] == 2 else
            f"{r['report_poll']:g} s" if r["report_poll"] is not None else "raydaa's 0.2 s")
    names = list(r["runs"][0]["phases"])
    where = ("through Ray Train, report collection every " + poll if r.get("ray_train")
             else "trained in its driver process")
    lines = [
        f"## One tiny trial, phase by phase: {where} ({r['date']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']}. Ray workers at nice 0, nothing else running.",
        "",
        f"Setup: a one-point grid (DPO β {BETA}, lr {LR:g}) on the shrunken `tiny` of the "
        "overhead benchmark (24 optimizer steps, 64 evaluation prompts), alone on the "
        "machine; phases from the trial's results-store row.",
        "",
    ]
    if r.get("note"):
        lines += [r["note"], ""]
    lines += ["| run | " + " | ".join(n.removesuffix("_seconds") for n in names)
              + " | trial (device-s) | command wall (s) | CPU-s of all its processes | final loss |",
              "|---" * (len(names) + 5) + "|"]
    for i, run in enumerate(r["runs"]):
        cells = [f"{run['phases'][n]:.1f}" if run["phases"][n] is not None else "n/a"
                 for n in names]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + f" | {run['device_seconds']:.1f} | "
                     f"{run['wall']:.1f} | {run['cpu_seconds']:.1f} | {run['final_loss']:.4f} |")
    top = sorted(r["runs"][0]["cpu_by_process"].items(), key=lambda kv: -kv[1][0])[:12]
    lines += ["", "CPU-seconds by process (run 1): " + "; ".join(
        f"{name} {sec:.1f}" + (f" (×{n})" if n > 1 else "") for name, (sec, n) in top) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
