"""`raydaa search`: one method's sweep from the shell, and what to look at when it ends."""

from __future__ import annotations

import argparse
import sys

from raydaa.cli.options import (
    add_curve_options,
    add_location_options,
    curve_backends_or_exit,
    data_ready,
    scenario_or_exit,
)
from raydaa.cli.optuna_options import add_optuna_options, check_optuna_options
from raydaa.cli.values import positive_int
from raydaa.io.ray_connection import connect_ray
from raydaa.io.storage import join as storage_join


def search_main(argv: list[str] | None = None) -> int:
    from raydaa.core.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="raydaa search",
        description=(
            "Sweep one method's β / lr / λ space in one scenario with Ray Tune (the paper's grid, "
            "or Optuna over it); every trial becomes one row of the results store."
        ),
    )
    add_location_options(parser)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--mode", default="grid", choices=("grid", "optuna"))
    parser.add_argument(
        "--num-trials", type=int, default=None, help="Optuna trials (default: half the grid)"
    )
    parser.add_argument("--seed", type=int, default=0, help="Optuna sampler seed")
    parser.add_argument(
        "--setup",
        default="two_stage",
        help="two_stage, or a single-stage setup: base_init, sft_init, sft_init_align_only",
    )
    parser.add_argument(
        "--optuna-storage", default=None, help="Optuna DB URL (default: SQLite in the results dir)"
    )
    parser.add_argument(
        "--storage", default=None, help="Ray Tune storage path: local dir, s3://, NFS"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument(
        "--max-concurrent-trials",
        type=int,
        default=None,
        help="trials at once (default: what the cluster's total CPUs/GPUs hold, or what an "
        "autoscaling cluster started with `ray up` can grow to)",
    )
    parser.add_argument(
        "--replicates", type=positive_int, default=None, metavar="N",
        help="after the sweep, rerun its best configuration(s) with N training seeds in all "
        "(the sweep's own + N-1 more: `raydaa replicate --seeds N`)",
    )  # fmt: skip
    parser.add_argument(
        "--replicate-top", type=positive_int, default=1, metavar="K",
        help="with --replicates: how many of the best configurations (default: %(default)s)",
    )  # fmt: skip
    add_optuna_options(parser)
    parser.add_argument(
        "--scheduler", default="none", choices=("asha", "hyperband", "none"),
        help="stop weak trials early on their intermediate evaluations (Ray Tune's ASHA or "
        "HyperBand on quality; needs the scenario's intermediate_eval.eval_every); "
        "default: %(default)s",
    )  # fmt: skip
    add_curve_options(parser)
    args = parser.parse_args(argv)
    check_optuna_options(parser, args)
    log_to = curve_backends_or_exit(parser, args)  # a tracking library missing: before Ray
    if args.num_trials is not None and args.num_trials < 1:
        parser.error("--num-trials must be >= 1")
    if args.max_concurrent_trials is not None and args.max_concurrent_trials < 1:
        parser.error("--max-concurrent-trials must be >= 1")
    if args.replicates is not None and args.setup != "two_stage":
        parser.error("--replicates replicates two-stage configurations; drop --setup "
                     f"{args.setup} or run the replicates after a two-stage sweep")  # fmt: skip
    scenario = scenario_or_exit(parser, args.scenario)
    from raydaa.sweep.schedulers import scheduler_problem

    if problem := scheduler_problem(args.scheduler, scenario):  # before Ray starts
        parser.error(problem)
    from raydaa.config.loading import ConfigError
    from raydaa.config.search_space import load_method_space
    from raydaa.io.storage import resolve

    try:
        resolve(args.results)
    except ValueError as err:
        parser.error(str(err))

    try:
        space = load_method_space(args.method, scenario, setup=args.setup)
    except ConfigError as err:
        parser.error(str(err))
    from raydaa.data.errors import DataValidationError
    from raydaa.data.preflight import ALL_SOURCES

    sources = ("preference", "validation") if space.init == "base" else ALL_SOURCES
    if not data_ready("raydaa search", scenario, sources):  # before Ray starts
        return 2
    dashboard = connect_ray(args.address)
    from raydaa.sweep.curve_loggers.settings import CurveSettingsError
    from raydaa.sweep.report_refresh import ReportRefreshCallback
    from raydaa.sweep.schedulers import SchedulerError
    from raydaa.sweep.search import SearchSettings, run_search

    results = resolve(args.results)
    try:
        where = run_search(
            SearchSettings(
                method=args.method,
                scenario=args.scenario,
                mode=args.mode,
                num_trials=args.num_trials,
                seed=args.seed,
                setup=args.setup,
                multi_objective=args.multi_objective,
                space=args.space,
                sampler=args.sampler,
                objective=args.objective,
                warm_start=args.warm_start,
                results=args.results,
                optuna_storage=args.optuna_storage,
                storage=args.storage,
                resume=args.resume,
                max_concurrent_trials=args.max_concurrent_trials,
                scheduler=args.scheduler,
                log_to=log_to,
                mlflow_uri=args.mlflow_uri,
                wandb_project=args.wandb_project,
            ),
            # the sweep keeps <results>/<scenario>/report/ current as trials finish
            callbacks=[ReportRefreshCallback(results, scenario.name)],
        )
    except (DataValidationError, SchedulerError, CurveSettingsError) as err:  # before trials
        print(f"raydaa search: {err}", file=sys.stderr)
        return 2
    interrupted = where.pop("interrupted")
    print("\nsweep interrupted:" if interrupted else "\nsweep done:")
    for key, value in where.items():
        if value is not None:
            print(f"  {key:<16} {value}")
    if interrupted:
        again = " ".join(a for a in (argv if argv is not None else sys.argv[2:]) if a != "--resume")
        print(
            "finished trials keep their rows; continue with:\n"
            f"  raydaa search {again} --resume",
            flush=True,
        )
        return 130
    print_next_steps(results, scenario.name, space, where, dashboard, kind=args.space,
                     kl_budget=kl_budget_of(args), log_to=tuple(log_to))
    if args.replicates is None:
        return 0
    return search_replicates(args, argv)


def search_replicates(args, argv: list[str] | None) -> int:
    """`--replicates N`: `raydaa replicate` for the swept method, in this Ray (two-stage
    only, checked at parse time: replicates compare the paper's recommended setup)."""
    from raydaa.cli.replicate import replicate
    from raydaa.sweep.replicate import ReplicateSettings

    print(f"\nseed replicates: the {args.replicate_top} best {args.method} configuration(s), "
          f"{args.replicates} seeds each", flush=True)  # fmt: skip
    settings = ReplicateSettings(
        method=args.method, top=args.replicate_top, seeds=args.replicates,
        scenario=args.scenario, results=args.results, storage=args.storage,
        resume=args.resume, max_concurrent_trials=args.max_concurrent_trials,
    )  # fmt: skip
    return replicate(settings, argv if argv is not None else sys.argv[2:], args.address,
                     command="search")  # fmt: skip


def kl_budget_of(args) -> float | None:
    """K of an Optuna sweep's `--objective quality-at-kl:K`, else None."""
    from raydaa.config.objective import parse_objective

    if args.mode != "optuna" or not args.objective:
        return None
    return parse_objective(args.objective).kl_budget


def print_next_steps(results: str, scenario: str, space, where: dict, dashboard: str | None,
                     kind: str = "grid", kl_budget: float | None = None,
                     log_to: tuple[str, ...] = ()) -> None:
    """What a user wants after a sweep: its best configuration, the report, the dashboards.
    The best is among this sweep's space only (the store may hold the method's other
    setups: single-stage rows beside two-stage ones); `kind` continuous: the box the grid
    spans (an Optuna --space continuous sweep); with `kl_budget` (quality-at-kl:K), among
    the rows whose KL is within it, as the study's own best."""
    from raydaa.config.optuna_space import in_space
    from raydaa.config.search_space import search_rows
    from raydaa.report.build import default_out
    from raydaa.report.select import ReportError, best_row, load_rows
    from raydaa.study.runner import same_config

    method, grid = space.method, space.grid()
    box = space.optuna_space(kind) if kind == "continuous" else None
    try:
        rows = [r for r in load_rows(results, scenario) if any(same_config(r, c) for c in grid)
                or box is not None and in_space(r, space.fixed(), box)]
    except ReportError:  # no row in the store at all
        rows = []
    rows = search_rows(rows)  # a configuration's seed replicates do not compete for best
    within = ""
    if kl_budget is not None:
        within = f" within KL ≤ {kl_budget:g}"
        rows = [r for r in rows if isinstance(r.get("kl"), float) and r["kl"] <= kl_budget]
    best = best_row(rows)
    if best is None:
        print(f"\nno finished {method} trial with a quality{within} yet: see the rows in the report")
    else:
        knobs = f"β={best['beta']:g} lr={best['lr']:g}"
        if best.get("sft_weight"):
            knobs += f" λ={best['lambda_']:g} sft_weight={best['sft_weight']:g}"
        finished = sum(r["status"] == "finished" for r in rows)
        print(
            f"\nbest {method} configuration{within} ({finished} finished trial{'' if finished == 1 else 's'}): "
            f"{knobs}: quality {best['quality']:.4f} [{best['quality_low']:.4f}, {best['quality_high']:.4f}], "
            f"KL {best['kl']:.4f} [{best['kl_low']:.4f}, {best['kl_high']:.4f}]"
        )
    print(f"report:           {storage_join(default_out(results, scenario), 'report.md')}")
    print(f"                  (rebuild: raydaa report --scenario {scenario} --results {results})")
    if dashboard:
        from raydaa.io.ray_connection import token_auth_enabled

        login = "; its token: `ray get-auth-token`" if token_auth_enabled() else ""
        print(f"Ray dashboard:    {dashboard} (while this Ray runs; a local one stops with the "
              f"command{login})")
    if "tensorboard" in log_to and where.get("tune_experiment"):
        print(f"TensorBoard:      tensorboard --logdir {where['tune_experiment']}  "
              "(pip install tensorboard; every trial's steps: runs ending in /steps)")
    if where.get("optuna_storage"):
        print(
            f"optuna-dashboard: optuna-dashboard {where['optuna_storage']}  "
            f"(pip install optuna-dashboard; study {where['optuna_study']})"
        )
