"""Search efficiency of `raydaa search --mode optuna`: how many trials Optuna needs to come
within the noise of the grid's best configuration, against the grid's size.

1. The grid: `raydaa search --method dpo --mode grid` on a shrunken `tiny` (through
   `$RAYDAA_SEARCH_SPACES`) over β × lr (default 3 × 3 = 9 configs). Noise = the 95%
   interval of the grid-best row's quality: the target is its `quality_low`.
2. Optuna, replayed: every configuration Optuna can suggest is a grid point (raydaa's
   Optuna space is a categorical over the grid's own values) and a trial is deterministic
   (seeded data order, init and sampling), so a suggestion's quality is the grid's
   measured quality for that config. The replay drives Optuna directly with the same
   space (`load_method_space(...).optuna_space()`), the same sampler Ray Tune's
   OptunaSearch builds (`TPESampler(seed=seed)`), the same direction (maximize quality),
   and the same ask/tell pattern as `raydaa search` on this machine (`--concurrency`
   trials in flight, FIFO completion; also sequentially), and answers each suggestion with
   the grid's value. Reported per seed: the first trial index whose best-so-far quality
   is >= the target, and that index as a fraction of the grid size.
3. One real `raydaa search --mode optuna --num-trials K --seed S`: its rows' qualities
   are compared with the grid's for the same configs, and its study's suggestions (SQLite,
   study `tiny-dpo-two_stage`) with the replay's for that seed.

Usage (about 10-12 minutes on 2 otherwise idle cores with an existing reference: 9 + 4
trials at ~90 s per pair; add ~2 min for SFT):

    python benchmarks/bench_search_efficiency.py [--results DIR] [--reference sft|base]
        [--betas 0.01 0.1 0.5] [--lrs 1e-4 3e-4 1e-3] [--num-prompts 64]
        [--seeds 0 1 2] [--num-trials N] [--concurrency 2] [--real-trials 4]
        [--real-seed 0] [--grid-results DIR] [--real-results DIR] [--note TEXT]
        [--out benchmarks/RESULTS.md] [--json FILE]

Keep `--num-prompts` at one value across runs that share `--results`: the reference's
cached baseline answers are rewritten for other prompts, which changes the reference's
fingerprint and so recomputes the reference log-prob cache (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search_common as common  # noqa: E402

METHOD = "dpo"
STUDY = f"tiny-{METHOD}-two_stage"


def key(beta: float, lr: float) -> tuple[float, float]:
    return (float(f"{beta:.12g}"), float(f"{lr:.12g}"))


def replay(space, grid: dict, seed: int, n: int, concurrency: int) -> list[dict[str, Any]]:
    """Optuna's suggestions for `n` trials, answered from the grid's measured values, with
    `concurrency` trials in flight (Tune asks until the limit, then one per completion)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    distributions = space.optuna_space()
    pending, done = [], []
    while len(done) < n:
        while len(pending) < concurrency and len(done) + len(pending) < n:
            pending.append(study.ask(fixed_distributions=distributions))
        trial = pending.pop(0)
        row = grid[key(trial.params["beta"], trial.params["lr"])]
        if math.isfinite(row["quality"]):
            study.tell(trial, row["quality"])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        done.append({"number": trial.number, "beta": trial.params["beta"],
                     "lr": trial.params["lr"], "quality": row["quality"]})
    return sorted(done, key=lambda t: t["number"])


def first_hit(trials: list[dict[str, Any]], target: float) -> int | None:
    """1-based index of the first trial whose best-so-far quality reaches `target`."""
    best = -math.inf
    for i, t in enumerate(trials, 1):
        if math.isfinite(t["quality"]):
            best = max(best, t["quality"])
        if best >= target:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.output_arguments(parser, Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--reference", default="sft", choices=("sft", "base"))
    parser.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--num-prompts", type=int, default=64,
                        help="validation prompts for generation and the judge")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-trials", type=int, default=None,
                        help="replayed Optuna trials per seed (default: the grid size)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="trials in flight in the replay (default: as `raydaa search` "
                             "on this machine: CPUs / (workers x CPUs per worker))")
    parser.add_argument("--real-trials", type=int, default=4,
                        help="trials of the real `raydaa search --mode optuna` (0: skip)")
    parser.add_argument("--real-seed", type=int, default=0)
    parser.add_argument("--grid-results", default=None,
                        help="reuse the grid sweep in this results dir instead of running it")
    parser.add_argument("--real-results", default=None,
                        help="reuse the real Optuna sweep (of --real-trials, --real-seed) in "
                             "this results dir instead of running it")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_search_efficiency.py", *(argv or sys.argv[1:])])

    work, base, logs = common.work_dirs("bench_search_efficiency", args.results)
    spaces = common.make_spaces(work, method=METHOD, betas=args.betas, lrs=args.lrs,
                                num_prompts=args.num_prompts)
    env = common.bench_env(spaces, Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    os.environ["RAYDAA_SEARCH_SPACES"] = str(spaces)  # this process reads the same space
    print(f"work dir {work}; logs in {logs}", flush=True)

    from raydaa.config.scenario import load_scenario
    from raydaa.config.search_space import load_method_space

    scenario = load_scenario("tiny")
    space = load_method_space(METHOD, scenario)
    res = scenario.resources
    concurrency = args.concurrency or max(
        1, (os.cpu_count() or 1) // (res.num_workers * res.cpus_per_worker))
    n_trials = args.num_trials or space.size

    ref = common.ensure_reference(base, env, args.reference, logs)
    print(f"reference: {ref['record']['path']} (reused: {ref['reused']})", flush=True)
    common.ensure_cache(base, env, METHOD, logs)

    # --- 1. the grid ------------------------------------------------------------------
    if args.grid_results:
        grid_dir, grid_wall, grid_load = Path(args.grid_results).resolve(), None, None
    else:
        grid_dir = common.fresh_results(base, work / "grid")
        cmd = common.raydaa_cmd("search", "--method", METHOD, "--mode", "grid",
                                "--results", str(grid_dir))
        rc, grid_wall, busy, _ = common.run_ray_command(cmd, env, logs / "grid.log")
        grid_load = busy.load
        if rc != 0:
            print((logs / "grid.log").read_text()[-4000:])
            raise SystemExit(f"grid sweep failed (rc {rc}); log {logs / 'grid.log'}")
        print(f"grid sweep: {grid_wall:.1f} s", flush=True)
    rows = common.store_rows(grid_dir, METHOD)
    grid = {key(r["beta"], r["lr"]): r for r in rows}
    missing = [c for c in space.grid() if key(c["beta"], c["lr"]) not in grid]
    if missing:
        raise SystemExit(f"the grid sweep has no row for {missing}")
    finished = [r for r in rows if r["status"] == "finished" and math.isfinite(r["quality"])]
    best = max(finished, key=lambda r: r["quality"])
    target = best["quality_low"]
    within = [r for r in finished if r["quality"] >= target]

    # --- 2. the replay ----------------------------------------------------------------
    replays = []
    for seed in args.seeds:
        entry = {"seed": seed}
        for label, c in (("tune", concurrency), ("sequential", 1)):
            trials = replay(space, grid, seed, n_trials, c)
            hit = first_hit(trials, target)
            entry[label] = {"concurrency": c, "trials": trials, "hit": hit}
        replays.append(entry)
        print(f"seed {seed}: first hit at trial {entry['tune']['hit']} "
              f"(sequential: {entry['sequential']['hit']})", flush=True)

    # --- 3. one real Optuna sweep ------------------------------------------------------
    real = None
    if args.real_trials > 0:
        import optuna

        if args.real_results:
            real_dir, wall, load = Path(args.real_results).resolve(), None, None
        else:
            real_dir = common.fresh_results(base, work / f"optuna-seed{args.real_seed}")
            cmd = common.raydaa_cmd("search", "--method", METHOD, "--mode", "optuna",
                                    "--num-trials", str(args.real_trials),
                                    "--seed", str(args.real_seed), "--results", str(real_dir))
            rc, wall, busy, _ = common.run_ray_command(cmd, env, logs / "optuna.log")
            load = busy.load
            if rc != 0:
                print((logs / "optuna.log").read_text()[-4000:])
                raise SystemExit(f"optuna sweep failed (rc {rc}); log {logs / 'optuna.log'}")
        study = optuna.load_study(study_name=STUDY,
                                  storage=f"sqlite:///{real_dir / 'tiny' / 'optuna.db'}")
        real_rows = common.store_rows(real_dir, METHOD)
        compared = []
        for r in real_rows:
            g = grid[key(r["beta"], r["lr"])]
            compared.append({
                "trial_id": r["trial_id"], "beta": r["beta"], "lr": r["lr"],
                "quality": r["quality"], "grid_quality": g["quality"],
                "kl": r["kl"], "grid_kl": g["kl"],
                "final_loss": r["final_loss"], "grid_final_loss": g["final_loss"],
                "match": r["quality"] == g["quality"],
            })
        suggested = [(t.params["beta"], t.params["lr"])
                     for t in sorted(study.trials, key=lambda t: t.number)]
        own = next(e for e in replays if e["seed"] == args.real_seed) if \
            args.real_seed in args.seeds else None
        replayed = (own["tune"]["trials"] if own else
                    replay(space, grid, args.real_seed, args.real_trials, concurrency))
        replayed = [(t["beta"], t["lr"]) for t in replayed[: len(suggested)]]
        real = {
            "seed": args.real_seed, "trials": args.real_trials, "wall_seconds": wall,
            "load": load, "rows": compared, "results": str(real_dir),
            "study_values": [t.value for t in sorted(study.trials, key=lambda t: t.number)],
            "suggested": suggested, "replayed": replayed,
            "same_suggestions": [key(*s) for s in suggested] == [key(*s) for s in replayed],
            "all_match": bool(compared) and all(c["match"] for c in compared),
        }
        print(f"real optuna sweep: {common.fmt(wall, 1)} s; qualities equal the grid's: "
              f"{real['all_match']}; suggestions equal the replay's: "
              f"{real['same_suggestions']}", flush=True)

    report = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": common.machine(), "reference": args.reference,
        "betas": args.betas, "lrs": args.lrs, "num_prompts": args.num_prompts,
        "grid_size": space.size, "grid_wall_seconds": grid_wall, "grid_load": grid_load,
        "grid": rows, "best": best, "target": target,
        "within_noise": [(r["beta"], r["lr"]) for r in within],
        "n_trials": n_trials, "concurrency": concurrency,
        "replays": replays, "real": real, "logs": str(logs), "note": args.note,
        "grid_results": str(grid_dir),
    }
    common.publish(report, render, args.json, args.out)
    return 0


def render(r: dict[str, Any]) -> str:
    size, target, best = r["grid_size"], r["target"], r["best"]
    ref = ("real SFT (`raydaa sft`)" if r["reference"] == "sft"
           else "the untrained base model (`raydaa sft --base`)")
    k = len(r["within_noise"])
    lines = [
        f"## `raydaa search` efficiency: Optuna trials to reach the grid best's noise, "
        f"DPO on tiny ({r['date']})",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        f"Machine: {r['machine']}. Shared with other jobs (the numbers here are qualities, "
        "not timings, and do not depend on load).",
        "",
        f"Setup: `tiny` shrunk through `$RAYDAA_SEARCH_SPACES` (align global batch 64, micro "
        f"batch 32, 1 epoch = 24 steps; generation and judge on {r['num_prompts']} "
        f"validation prompts; gold judge, win rate against the reference's own samples, "
        f"ties half), reference = {ref}; DPO grid β {r['betas']} × lr {r['lrs']} = {size} "
        f"configs, run by `raydaa search --method dpo --mode grid`"
        + (f" in {r['grid_wall_seconds']:.0f} s (load average {r['grid_load']:.1f})"
           if r["grid_wall_seconds"] else f" (reused from `{r['grid_results']}`)")
        + "." + (f" {r['note']}" if r.get("note") else ""),
        "",
        "### The grid (quality = win rate, 95% interval; KL(π‖π_ref) k1 estimate)",
        "",
        "| β | lr | status | quality [95% interval] | KL | final loss |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(r["grid"], key=lambda x: (x["beta"], x["lr"])):
        mark = " **(best)**" if row["trial_id"] == best["trial_id"] else (
            " (within noise)" if (row["beta"], row["lr"]) in
            [tuple(w) for w in r["within_noise"]] else "")
        lines.append(
            f"| {row['beta']:g} | {row['lr']:g} | {row['status']} | "
            f"{row['quality']:.3f} [{row['quality_low']:.3f}, {row['quality_high']:.3f}]"
            f"{mark} | {row['kl']:.3f} | {row['final_loss']:.4f} |")
    p_hit = k / size
    lines += [
        "",
        f"Grid best: β={best['beta']:g}, lr={best['lr']:g}, quality {best['quality']:.3f}; "
        f"target = its quality_low = **{target:.3f}**. Configs at or above the target: "
        f"{k} of {size} (so a uniform random draw hits with probability {p_hit:.2f}: "
        f"expected {1 / p_hit:.1f} draws with replacement, {(size + 1) / (k + 1):.1f} "
        "without).",
        "",
        "### Optuna, replayed on the grid's measured qualities",
        "",
        "**This part is a replay, not new training runs**: each config's quality is "
        "deterministic (seeded data order, model init and sampling; checked below), so "
        "Optuna (the same categorical space from `load_method_space('dpo', tiny)."
        "optuna_space()`, `TPESampler(seed)` as Ray Tune's `OptunaSearch` builds it, "
        "maximize quality) is answered with the grid row of the config it suggests. "
        f"\"Tune order\": {r['concurrency']} trials in flight, as `raydaa search` runs on "
        "this machine (a new suggestion as each trial ends, FIFO); \"sequential\": one at "
        f"a time. {r['n_trials']} trials per seed. Note that `TPESampler` draws its first "
        f"10 trials at random (`n_startup_trials=10`), so on a {size}-point grid Optuna is "
        "close to random search with replacement (it can suggest a config twice).",
        "",
        "| seed | first trial with best-so-far ≥ target (Tune order) | fraction of grid "
        "| sequential | fraction | suggestions in order (β, lr → quality), Tune order |",
        "|---|---|---|---|---|---|",
    ]
    hits, seq_hits = [], []
    for e in r["replays"]:
        t, s = e["tune"], e["sequential"]
        hits.append(t["hit"])
        seq_hits.append(s["hit"])
        order = "; ".join(f"{x['beta']:g}, {x['lr']:g} → {x['quality']:.3f}"
                          for x in t["trials"][: (t["hit"] or len(t["trials"]))])
        never = f"> {r['n_trials']}"
        lines.append(
            f"| {e['seed']} | {t['hit'] or never} | {frac(t['hit'], size)} | "
            f"{s['hit'] or never} | {frac(s['hit'], size)} | {order} |")

    def mean(values: list) -> str:
        if any(v is None for v in values):
            return "n/a (a seed never reached the target)"
        m = sum(values) / len(values)
        return f"{m:.2f} trials = **{m / size:.0%}** of the grid"

    lines += [
        "",
        f"Mean over seeds {[e['seed'] for e in r['replays']]}: Tune order {mean(hits)}; "
        f"sequential {mean(seq_hits)} (target ≤ 40%).",
    ]
    real = r["real"]
    if real:
        lines += [
            "",
            f"### Check: a real `raydaa search --mode optuna --num-trials {real['trials']} "
            f"--seed {real['seed']}`",
            "",
            (f"Ran in {real['wall_seconds']:.0f} s (load average {real['load']:.1f}), "
             if real["wall_seconds"] else f"Reused from `{real['results']}`: ")
            + "a fresh results dir (new Optuna study) sharing the reference and its cache.",
            "",
            "| trial | β | lr | quality (optuna run) | quality (grid) | KL optuna / grid | "
            "final loss optuna / grid | equal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in real["rows"]:
            lines.append(
                f"| {c['trial_id']} | {c['beta']:g} | {c['lr']:g} | {c['quality']:.6f} | "
                f"{c['grid_quality']:.6f} | {c['kl']:.6f} / {c['grid_kl']:.6f} | "
                f"{c['final_loss']:.6f} / {c['grid_final_loss']:.6f} | "
                f"{'yes' if c['match'] else 'NO'} |")
        lines += [
            "",
            f"- Qualities of the real Optuna trials equal the grid's for the same configs: "
            f"**{'yes' if real['all_match'] else 'no'}**.",
            f"- The real study's suggestions, in trial order: {fmt_pairs(real['suggested'])}; "
            f"the replay's first {len(real['replayed'])} (Tune order, seed {real['seed']}): "
            f"{fmt_pairs(real['replayed'])} — "
            f"{'the same' if real['same_suggestions'] else 'different'}.",
        ]
    return "\n".join(lines) + "\n"


def frac(hit: int | None, size: int) -> str:
    return f"{hit / size:.0%}" if hit else "n/a"


def fmt_pairs(pairs: list) -> str:
    return ", ".join(f"({b:g}, {lr:g})" for b, lr in pairs)


if __name__ == "__main__":
    sys.exit(main())
