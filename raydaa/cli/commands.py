"""`raydaa sft`, `raydaa align` and `raydaa search`: the training stages from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from raydaa.cli.options import add_location_options, add_loss_options
from raydaa.config.scenario import ConfigError, load_scenario
from raydaa.io.ray_connection import connect_ray
from raydaa.io.storage import join as storage_join


def _load(parser: argparse.ArgumentParser, name: str):
    try:
        return load_scenario(name)
    except ConfigError as err:
        parser.error(str(err))


def sft_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa sft",
        description=(
            "Stage 1: train SFT on the scenario's SFT data (paper Table 4 recipe) and register it "
            "as the scenario's reference policy, reused by every alignment trial."
        ),
    )
    add_location_options(parser)
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="share of the SFT data, 0.01-1 (paper RQ4)"
    )
    parser.add_argument(
        "--base", action="store_true", help="register the base model, no SFT (paper RQ1)"
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain even if a matching reference exists"
    )
    args = parser.parse_args(argv)
    if not 0.01 <= args.fraction <= 1.0:
        parser.error(f"--fraction must be in [0.01, 1], got {args.fraction}")
    scenario = _load(parser, args.scenario)
    connect_ray(args.address)
    from raydaa.train.stages import run_sft

    record = run_sft(
        scenario,
        results=args.results,
        fraction=args.fraction,
        base_init=args.base,
        force=args.force,
    )
    print(json.dumps(record, indent=2))
    print(f"reference policy of {scenario.name}: {record['path']}")
    return 0


def align_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa align",
        description=(
            "Stage 2: one alignment run of one method with one configuration, from the "
            "scenario's reference policy (run `raydaa sft` first)."
        ),
    )
    add_location_options(parser)
    add_loss_options(parser)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (a smoke test; the lr schedule keeps its length)",
    )
    args = parser.parse_args(argv)
    from raydaa.config.search_space import AlignConfig

    try:  # the loss checks its own fields, before anything is loaded or trained
        config = AlignConfig.from_config(vars(args))
    except ValueError as err:
        parser.error(str(err))
    scenario = _load(parser, args.scenario)
    from raydaa.data.validation import DataValidationError
    from raydaa.train.stages import prepare_alignment, reference_record, run_alignment

    if reference_record(args.results, scenario) is None:
        print(
            f"raydaa align: scenario {scenario.name} has no reference policy in {args.results}; "
            f"run `raydaa sft --scenario {scenario.name}` first",
            file=sys.stderr,
        )
        return 2
    connect_ray(args.address)
    try:
        inputs = prepare_alignment(
            scenario, results=args.results, needs_reference=config.loss.spec.needs_reference
        )
    except DataValidationError as err:
        print(f"raydaa align: {err}", file=sys.stderr)
        return 2
    overrides = {"stop_after_steps": args.max_steps} if args.max_steps else {}
    result = run_alignment(scenario, config, inputs, results=args.results, **overrides)
    final = {k: v for k, v in result.final.items() if isinstance(v, int | float | str)}
    print(
        json.dumps(
            {
                "status": result.status,
                "error": result.error,
                "model": result.path,
                "seconds": round(result.seconds, 1),
                "final": final,
            },
            indent=2,
        )
    )
    return 0 if result.status in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(sft_main())


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
        "--multi-objective", action="store_true", help="Optuna on (quality max, KL min)"
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
        help="trials at once (default: what the free resources fit now; on an autoscaling "
        "cluster give the size it grows to, e.g. 8 for 8 GPU nodes of one trial each)",
    )
    args = parser.parse_args(argv)
    if args.num_trials is not None and args.num_trials < 1:
        parser.error("--num-trials must be >= 1")
    if args.max_concurrent_trials is not None and args.max_concurrent_trials < 1:
        parser.error("--max-concurrent-trials must be >= 1")
    scenario = _load(parser, args.scenario)
    from raydaa.config.scenario import ConfigError
    from raydaa.config.search_space import load_method_space
    from raydaa.io.storage import resolve

    try:
        resolve(args.results)
    except ValueError as err:
        parser.error(str(err))

    try:
        load_method_space(args.method, scenario, setup=args.setup)
    except ConfigError as err:
        parser.error(str(err))
    dashboard = connect_ray(args.address)
    from raydaa.sweep.report_refresh import ReportRefreshCallback
    from raydaa.sweep.search import SearchSettings, run_search

    results = resolve(args.results)
    where = run_search(
        SearchSettings(
            method=args.method,
            scenario=args.scenario,
            mode=args.mode,
            num_trials=args.num_trials,
            seed=args.seed,
            setup=args.setup,
            multi_objective=args.multi_objective,
            results=args.results,
            optuna_storage=args.optuna_storage,
            storage=args.storage,
            resume=args.resume,
            max_concurrent_trials=args.max_concurrent_trials,
        ),
        # the sweep keeps <results>/<scenario>/report/ current as trials finish
        callbacks=[ReportRefreshCallback(results, scenario.name)],
    )
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
    print_next_steps(results, scenario.name, args.method, where, dashboard)
    return 0


def print_next_steps(results: str, scenario: str, method: str, where: dict, dashboard: str | None) -> None:
    """What a user wants after a sweep: its best configuration, the report, the dashboards."""
    from raydaa.report.build import default_out
    from raydaa.report.select import best_row, load_rows

    rows = [r for r in load_rows(results, scenario) if r["method"] == method]
    best = best_row(rows)
    if best is None:
        print(f"\nno finished {method} trial with a quality yet: see the rows' errors in the report")
    else:
        knobs = f"β={best['beta']:g} lr={best['lr']:g}"
        if best.get("sft_weight"):
            knobs += f" λ={best['lambda_']:g} sft_weight={best['sft_weight']:g}"
        print(
            f"\nbest {method} configuration ({sum(r['status'] == 'finished' for r in rows)} finished trials): "
            f"{knobs}: quality {best['quality']:.4f} [{best['quality_low']:.4f}, {best['quality_high']:.4f}], "
            f"KL {best['kl']:.4f} [{best['kl_low']:.4f}, {best['kl_high']:.4f}]"
        )
    print(f"report:           {storage_join(default_out(results, scenario), 'report.md')}")
    print(f"                  (rebuild: raydaa report --scenario {scenario} --results {results})")
    if dashboard:
        print(f"Ray dashboard:    {dashboard} (while this Ray runs; a local one stops with the command)")
    if where.get("optuna_storage"):
        print(
            f"optuna-dashboard: optuna-dashboard {where['optuna_storage']}  "
            f"(pip install optuna-dashboard; study {where['optuna_study']})"
        )
