"""Orchestration overhead of `raydaa search`: a small sweep against the same trials run back
to back in one process without Ray.

Sweep side: the real command line,

    raydaa search --method dpo --mode grid --results DIR

on a shrunken `tiny` (through `$RAYDAA_SEARCH_SPACES`, as tests/test_search.py does):
Ray Tune runs one trial per grid point; each trial trains a DeepSpeed ZeRO-2 engine in its
driver process (one CPU worker: raydaa/train/in_process.py; with `--ray-train`, a Ray
Train V2 TorchTrainer), then `evaluate_policy`, then a row in the results store.

Baseline side (a subprocess of this script, `--baseline-only`): the simplest honest
equivalent in one Python process, no Ray, no DeepSpeed. For each grid point: load the
reference with transformers, train it with plain torch AdamW (the scenario's betas, lr,
linear warmup then linear decay, grad clip), over the same batches (raydaa's BatchPlan
order and PreferenceCollator, same global and micro batch, same number of steps), with the
same loss (`raydaa.train.objectives.PreferenceObjective` reading the same reference log-prob
cache), `save_pretrained`, then the same `evaluate_policy`. Trials run one after another.

What both sides share and neither pays for inside the measured runs (done once first):
the reference policy (`raydaa sft`, or `raydaa sft --base` with `--reference base`), the
tokenized preference data, the reference log-prob cache and the reference's own samples on
the evaluation prompts (the judge's baseline answers).

Reported: wall time of each command from start to end, and of its trial phase (excluding
the one-time start-up: Python imports, Ray start, `prepare_alignment`, Tuner set-up); each
trial's own time; the ratio sweep / baseline; how many trials Tune ran at once.

Usage (about 5-6 minutes on 2 otherwise idle cores with an existing reference; add ~2 min
for SFT; many times longer when other jobs load the machine):

    python benchmarks/bench_search_overhead.py [--results DIR] [--reference sft|base]
        [--threads 1] [--note TEXT] [--out benchmarks/RESULTS.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search_common as common  # noqa: E402

METHOD = "dpo"
BETAS = [0.1, 0.5]
LRS = [1e-5, 3e-5]
NUM_PROMPTS = 64
GLOBAL_BATCH, MICRO_BATCH = 64, 32


# ---------------------------------------------------------------------------------------
# The no-Ray baseline (runs in its own process: `--baseline-only`)
# ---------------------------------------------------------------------------------------


def baseline(results: Path, threads: int) -> dict[str, Any]:
    """Every grid point of the shrunken space, back to back, in this process."""
    t_start = time.perf_counter()
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space
    from raydaa.data.collators import PreferenceCollator
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.io.models import pretrained_model
    from raydaa.losses import LossConfig
    from raydaa.train.objectives import PreferenceObjective
    from raydaa.train.sharding import BatchPlan
    from raydaa.train.stages import prepare_alignment, train_settings

    torch.set_num_threads(threads)
    scenario = load_scenario("tiny")
    space = load_method_space(METHOD, scenario)
    # Cache hit: the one-time preparation already wrote data and reference log-probs.
    shared = prepare_alignment(scenario, results=results)
    dataset = shared.dataset()
    collate = PreferenceCollator(shared.pad_token_id)
    reference = shared.reference_path
    recipe = scenario.align
    t_prepared = time.perf_counter()

    trials = []
    for config in space.grid():
        start, cpu_start = time.perf_counter(), time.process_time()
        s = train_settings(scenario, recipe, shared.rows, lr=config["lr"])
        steps, accum = s["total_steps"], s["global_batch_size"] // s["micro_batch_size"]
        warmup = int(s["warmup_ratio"] * steps)

        def factor(step: int, steps: int = steps, warmup: int = warmup) -> float:
            # linear warmup over `warmup` steps, then linear decay (no step at lr 0)
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (steps - step) / max(1, steps - warmup))

        torch.manual_seed(scenario.seed)
        model = pretrained_model(reference, attn_implementation="sdpa", dtype=torch.float32)
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config["lr"], betas=tuple(s["adam_betas"]), eps=1e-8,
            weight_decay=0.0,
        )
        schedule = LambdaLR(optimizer, factor)
        objective = PreferenceObjective(
            LossConfig.from_mapping(config),
            reference_cache=shared.cache,
            pad_token_id=shared.pad_token_id,
        )
        plan = BatchPlan(len(dataset), global_batch_size=s["global_batch_size"],
                         micro_batch_size=s["micro_batch_size"], world_size=1, rank=0,
                         seed=scenario.seed)
        losses = []
        for step in range(steps):
            step_loss = 0.0
            for micro in range(accum):
                batch = collate([dataset[i] for i in plan.indices(step, micro)])
                loss, _ = objective(model, batch)
                (loss / accum).backward()
                step_loss += loss.item() / accum
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
        trained = time.perf_counter()
        out = results / "tiny" / "baseline" / f"b{config['beta']:g}-lr{config['lr']:g}"
        model.save_pretrained(out)
        del model, optimizer
        metrics = evaluate_policy(str(out), reference, scenario)
        end = time.perf_counter()
        trials.append({
            "beta": config["beta"], "lr": config["lr"], "steps": steps,
            "seconds": end - start, "train_seconds": trained - start,
            "eval_seconds": end - trained, "cpu_seconds": time.process_time() - cpu_start,
            "final_loss": losses[-1],
            "quality": metrics["quality"], "kl": metrics["kl"],
        })
        print(json.dumps(trials[-1]), flush=True)
    return {
        "threads": threads,
        "betas": list(recipe.adam_betas),
        "startup_seconds": t_prepared - t_start,
        "trials_seconds": time.perf_counter() - t_prepared,
        "trials": trials,
    }


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------


def sweep_timeline(results: Path, launched_at: float, wall: float, log: Path) -> dict[str, Any]:
    """Per-trial times from the results store. A trial's row is written by the Tune
    callback right after the trial reports, so its file time is the trial's end; its
    `device_seconds` (1 worker) is the trial driver's own time (train + evaluate)."""
    rows = common.store_rows(results, METHOD)
    store = results / "tiny" / "store" / METHOD
    trials = []
    for row in rows:
        end = (store / f"{row['trial_id']}.parquet").stat().st_mtime - launched_at
        trials.append({
            "trial_id": row["trial_id"], "beta": row["beta"], "lr": row["lr"],
            "status": row["status"], "seconds": row["device_seconds"],
            "start": end - row["device_seconds"], "end": end,
            "final_loss": row["final_loss"], "quality": row["quality"], "kl": row["kl"],
        })
    # Most trials whose [start, end] overlap at one moment.
    events = sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials])
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    # Tune's own progress table: "Trial status: 2 RUNNING | 2 PENDING" (or similar).
    text = log.read_text(errors="replace")
    reported = [int(n) for n in re.findall(r"(\d+)\s+RUNNING", text)]
    first = min(t["start"] for t in trials) if trials else math.nan
    return {
        "wall_seconds": wall,
        "startup_seconds": first,
        "trials_seconds": wall - first,
        "max_overlap": most,
        "tune_max_running": max(reported) if reported else None,
        "trials": sorted(trials, key=lambda t: t["start"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.output_arguments(parser, Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--reference", default="sft", choices=("sft", "base"),
                        help="reference policy: real SFT (`raydaa sft`) or `raydaa sft --base`")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the baseline process (default 1: what each "
                             "trial's Ray Train worker uses, cpus_per_worker=1; more threads "
                             "spin-wait for each other on a machine shared with other jobs)")
    parser.add_argument("--ray-train", action="store_true",
                        help="trials train through Ray Train (resources.in_process: false) "
                             "instead of in their drivers")
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.baseline_only:  # the child process of the baseline side
        out = baseline(Path(args.results), args.threads)
        Path(args.json).write_text(json.dumps(out, indent=2))
        return 0

    command = shlex.join(["python", "benchmarks/bench_search_overhead.py", *(argv or sys.argv[1:])])
    work, base, logs = common.work_dirs("bench_search_overhead", args.results)
    spaces = common.make_spaces(work, method=METHOD, betas=BETAS, lrs=LRS,
                                num_prompts=NUM_PROMPTS, global_batch_size=GLOBAL_BATCH,
                                micro_batch_size=MICRO_BATCH, in_process=not args.ray_train)
    env = common.bench_env(spaces, Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    print(f"work dir {work}; logs in {logs}", flush=True)

    ref = common.ensure_reference(base, env, args.reference, logs)
    print(f"reference: {ref['record']['path']} (reused: {ref['reused']})", flush=True)
    prepare_seconds = common.ensure_cache(base, env, METHOD, logs)
    print(f"one-time preparation (data, reference cache, baseline answers): "
          f"{prepare_seconds:.1f} s", flush=True)

    # --- the baseline -----------------------------------------------------------------
    base_dir = common.fresh_results(base, work / "baseline")
    out_json = work / "baseline.json"
    cmd = [sys.executable, __file__, "--baseline-only", "--results", str(base_dir),
           "--threads", str(args.threads), "--json", str(out_json)]
    rc, wall, busy = common.run_logged(cmd, env, logs / "baseline.log")
    if rc != 0:
        print((logs / "baseline.log").read_text()[-4000:])
        raise SystemExit(f"baseline failed (rc {rc}); log {logs / 'baseline.log'}")
    plain = json.loads(out_json.read_text())
    plain |= {"wall_seconds": wall, "cpu_busy": busy.cores, "load": busy.load,
              "cpu_seconds": busy.cpu_seconds, "cpu_by_kind": busy.cpu_by_kind}
    # From the command start: the child's own start-up plus interpreter start and imports.
    plain["startup_seconds"] = wall - plain["trials_seconds"]
    print(f"baseline: {wall:.1f} s", flush=True)

    # --- the sweep --------------------------------------------------------------------
    sweep_dir = common.fresh_results(base, work / "sweep")
    cmd = common.raydaa_cmd("search", "--method", METHOD, "--mode", "grid",
                            "--results", str(sweep_dir))
    launched = time.time()
    rc, wall, busy, ray_start_failures = common.run_ray_command(cmd, env, logs / "sweep.log")
    if rc != 0:
        print((logs / "sweep.log").read_text()[-4000:])
        raise SystemExit(f"raydaa search failed (rc {rc}); log {logs / 'sweep.log'}")
    sweep = sweep_timeline(sweep_dir, launched, wall, logs / "sweep.log")
    sweep |= {"cpu_busy": busy.cores, "load": busy.load, "cpu_seconds": busy.cpu_seconds,
              "cpu_by_kind": busy.cpu_by_kind, "ray_start_failures": ray_start_failures,
              "train_worker_cpu": [sec for kind, _, sec in busy.cpu_by_process
                                   if kind.startswith("Ray Train workers")],
              "trial_driver_cpu": [sec for kind, _, sec in busy.cpu_by_process
                                   if kind.startswith("Tune trial drivers")],
              "processes": sorted(busy.cpu_by_process, key=lambda x: -x[2])}
    print(f"sweep: {wall:.1f} s", flush=True)

    report = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": common.machine(),
        "reference": args.reference,
        "reference_seconds": ref["seconds"],
        "prepare_seconds": prepare_seconds,
        "ray_train": args.ray_train,
        "sweep": sweep,
        "baseline": plain,
        "ratio_wall": sweep["wall_seconds"] / plain["wall_seconds"],
        "ratio_trials": sweep["trials_seconds"] / plain["trials_seconds"],
        "ratio_cpu": sweep["cpu_seconds"] / plain["cpu_seconds"],
        "logs": str(logs),
        "note": args.note,
    }
    common.publish(report, render, args.json, args.out)
    return 0


def render(r: dict[str, Any]) -> str:
    s, b = r["sweep"], r["baseline"]
    ref = ("real SFT (`raydaa sft`, stage 1 of the scenario's recipe)" if r["reference"] == "sft"
           else "the untrained base model (`raydaa sft --base`)")
    by_config = {(t["beta"], t["lr"]): t for t in b["trials"]}
    lines = [
        f"## `raydaa search` orchestration overhead: 4-trial DPO grid vs the same trials "
        f"without Ray ({r['date']})",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        f"Machine: {r['machine']}. Shared with other jobs: \"CPU busy\" is the number of "
        "cores busy (all processes on the machine) during each run, and the load average "
        "(runnable processes, sampled every 2 s) shows how many processes competed for the "
        "2 cores. Ray worker niceness 0 "
        "(`RAY_worker_niceness=0`, as in the baseline process) and a private `RAY_TMPDIR`.",
        "",
        f"Setup: `tiny` shrunk through `$RAYDAA_SEARCH_SPACES` (align global batch "
        f"{GLOBAL_BATCH}, micro batch {MICRO_BATCH}: {b['trials'][0]['steps']} optimizer steps "
        f"of 1 epoch over 1500 pairs, 2 micro batches each; generation and judge on "
        f"{NUM_PROMPTS} validation prompts), DPO grid β {BETAS} × lr {LRS} (4 trials), "
        f"reference = {ref}. Done once before both sides and measured in neither: the "
        f"reference ({common.fmt(r['reference_seconds'], 1) + ' s' if r['reference_seconds'] else 'reused'}), "
        f"the tokenized data, the reference log-prob cache and the reference's samples on the "
        f"evaluation prompts (the call that checks or makes them took {r['prepare_seconds']:.1f} s; the cache, when missing, is computed by a Ray task).",
        "",
        "- Sweep: `raydaa search --method dpo --mode grid` (Ray Tune grid, per trial "
        + ("one Ray Train V2 TorchTrainer with 1 worker x 1 CPU (`resources.in_process: "
           "false`)" if r.get("ray_train") else "one engine trained in the trial's driver "
           "process (1 CPU, `raydaa/train/in_process.py`)")
        + " running DeepSpeed ZeRO-2 on the CPU accelerator, the final DeepSpeed checkpoint "
        "+ HF export, `evaluate_policy`, a results-store row).",
        f"- Baseline: the same 4 configs back to back in one process, no Ray: transformers "
        f"`from_pretrained`, torch AdamW (betas {tuple(b['betas'])}, wd 0), LambdaLR "
        f"linear warmup (ratio 0.03) + linear decay, grad clip 2, raydaa's BatchPlan order + "
        f"PreferenceCollator, `PreferenceObjective` on the same reference cache, "
        f"`save_pretrained`, the same `evaluate_policy`; torch threads {b['threads']}.",
        "",
        "| side | wall, command start to end (s) | start-up (s) | trial phase (s) | "
        "CPU-seconds of its process tree | CPU busy, machine (cores) | "
        "load average (1 min, mean) |",
        "|---|---|---|---|---|---|---|",
        f"| sweep (`raydaa search`) | {s['wall_seconds']:.1f} | {s['startup_seconds']:.1f} | "
        f"{s['trials_seconds']:.1f} | {s['cpu_seconds']:.1f} | {s['cpu_busy']:.2f} | "
        f"{s['load']:.1f} |",
        f"| baseline (one process, no Ray) | {b['wall_seconds']:.1f} | "
        f"{b['startup_seconds']:.1f} | {b['trials_seconds']:.1f} | {b['cpu_seconds']:.1f} | "
        f"{b['cpu_busy']:.2f} | {b['load']:.1f} |",
        f"| **ratio sweep / baseline** | **{r['ratio_wall']:.2f}** | | "
        f"**{r['ratio_trials']:.2f}** | **{r['ratio_cpu']:.2f}** | | |",
        "",
        "| β | lr | sweep trial (s) | sweep start → end (s after launch) | baseline trial (s): "
        "train + eval | baseline trial CPU-s | final loss sweep / baseline | "
        "quality sweep / baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in s["trials"]:
        p = by_config.get((t["beta"], t["lr"]), {})
        lines.append(
            f"| {t['beta']:g} | {t['lr']:g} | {t['seconds']:.1f} | {t['start']:.1f} → "
            f"{t['end']:.1f} | {p.get('seconds', math.nan):.1f}: "
            f"{p.get('train_seconds', math.nan):.1f} + {p.get('eval_seconds', math.nan):.1f} | "
            f"{p.get('cpu_seconds', math.nan):.1f} | "
            f"{t['final_loss']:.4f} / {p.get('final_loss', math.nan):.4f} | "
            f"{t['quality']:.3f} / {p.get('quality', math.nan):.3f} |"
        )
    lines += [
        "",
        "Where the CPU went (CPU-seconds by process kind):",
        "",
        "| process kind | sweep | baseline |",
        "|---|---|---|",
    ]
    for kind in dict.fromkeys([*s["cpu_by_kind"], *b["cpu_by_kind"]]):
        lines.append(f"| {kind} | {s['cpu_by_kind'].get(kind, 0.0):.1f} | "
                     f"{b['cpu_by_kind'].get(kind, 0.0):.1f} |")
    lines.append(f"| **total** | **{s['cpu_seconds']:.1f}** | **{b['cpu_seconds']:.1f}** |")
    others = [p for p in s.get("processes", []) if p[0] == "other child processes"]
    if others:
        count: dict[str, list[float]] = {}
        for _, name, sec in others:
            label = " ".join(name.split()[:3])[:90]
            count.setdefault(label, []).append(sec)
        top = sorted(count.items(), key=lambda kv: -sum(kv[1]))[:4]
        lines += ["", "\"Other child processes\" of the sweep, by command line: " + "; ".join(
            f"`{label}` ×{len(secs)}: {sum(secs):.1f} CPU-s" for label, secs in top) + "."]
    lines += [
        "",
        "Per trial, CPU-seconds: "
        + (("sweep Train workers " + ", ".join(f"{x:.1f}" for x in sorted(s["train_worker_cpu"]))
            + "; sweep trial drivers (evaluation, waiting) ") if s["train_worker_cpu"]
           else "sweep trial drivers (each trains and evaluates the trials it ran) ")
        + ", ".join(f"{x:.1f}" for x in sorted(s["trial_driver_cpu"]))
        + "; baseline trials (train + eval) "
        + ", ".join(f"{t['cpu_seconds']:.1f}" for t in sorted(b["trials"],
                                                               key=lambda t: t["cpu_seconds"]))
        + ".",
    ]
    tune_running = s["tune_max_running"]
    lines += [
        "",
        f"- Concurrency: Tune's progress table showed at most "
        f"{tune_running if tune_running is not None else 'n/a'} trial(s) RUNNING; "
        f"the trials' own [start, end] intervals overlap {s['max_overlap']} at most "
        "(raydaa derives `max_concurrent_trials` from the cluster's CPUs: 2 cores / "
        "(1 worker x 1 CPU) = 2).",
        "- Start-up: sweep = from launch to the first trial driver's start (interpreter, "
        "imports, local Ray start, `prepare_alignment` on the cached data, Tuner set-up, "
        "trial actor start); baseline = from launch to its first trial (interpreter, "
        "imports, `prepare_alignment` on the cached data). Trial phase = the rest.",
        "- CPU-seconds: user + system time of the command's process and every process it "
        "started, transitively (for the sweep: the CLI with Tune's driver loop, Ray's "
        "daemons, the trial actors, Train controllers and workers), polled from /proc every "
        "0.5 s. On a machine shared with other jobs it measures the work each side did "
        "whatever the other jobs took, which wall time does not (save that Ray's timed "
        "polling loops run longer when the sweep is slowed down).",
        "- Order: the baseline ran first, then the sweep (one round each)."
        + (f" {r['note']}" if r.get("note") else ""),
        "- Per-trial sweep time = the trial driver's own time (with `--ray-train`, Ray "
        "Train controller and worker start; DeepSpeed init, training, checkpoint + HF "
        "export, evaluation), from the row's `device_seconds`; its end is the row file's "
        "time.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
