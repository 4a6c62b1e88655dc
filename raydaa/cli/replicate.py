"""`raydaa replicate`: rerun a method's top-K configurations with other training seeds."""

from __future__ import annotations

import argparse
import sys

from raydaa.cli.options import add_location_options, scenario_or_exit
from raydaa.cli.values import positive_int as positive


def main(argv: list[str] | None = None) -> int:
    from raydaa.core.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="raydaa replicate",
        description=(
            "Rerun a method's top-K two-stage configurations (by quality among the store's "
            "finished rows) with N training seeds in all: the search's own seed S plus "
            "S+1 ... S+N-1, one Ray Tune sweep, one store row per (configuration, seed). "
            "Seeds already in the store are skipped. Evaluation samples with the scenario's "
            "seed for every run."
        ),
    )
    add_location_options(parser)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument(
        "--top", type=positive, default=1, metavar="K",
        help="replicate the method's K best configurations (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=positive, required=True, metavar="N",
        help="seeds per configuration in all, the search's own included (N=3: two more runs)",
    )  # fmt: skip
    parser.add_argument("--storage", default=None, help="Ray Tune storage path: local dir, s3://, NFS")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted replicate run of the same --top/--seeds",
    )  # fmt: skip
    parser.add_argument(
        "--retry-failed", action="store_true",
        help="rerun a seed whose replicate failed (default: a failed seed is a result)",
    )  # fmt: skip
    parser.add_argument("--max-concurrent-trials", type=positive, default=None, metavar="N")
    args = parser.parse_args(argv)
    scenario_or_exit(parser, args.scenario)
    from raydaa.io.storage import resolve
    from raydaa.sweep.replicate import ReplicateSettings

    try:
        resolve(args.results)
    except ValueError as err:
        parser.error(str(err))
    settings = ReplicateSettings(
        method=args.method, top=args.top, seeds=args.seeds, scenario=args.scenario,
        results=args.results, storage=args.storage, resume=args.resume,
        retry_failed=args.retry_failed, max_concurrent_trials=args.max_concurrent_trials,
    )  # fmt: skip
    return replicate(settings, argv if argv is not None else sys.argv[2:], args.address)


def replicate(settings, argv: list[str], address: str | None, command: str = "replicate") -> int:
    """Plan (no Ray), run what is missing, say where the rows are; `raydaa search
    --replicates` calls it after its sweep (Ray is connected by then)."""
    from raydaa.sweep.replicate import ReplicateError, describe, load_plan

    try:
        plan = load_plan(settings)
    except ReplicateError as err:
        print(f"raydaa {command}: {err}", file=sys.stderr)
        return 2
    print(f"seed replicates of {settings.method}: seeds {plan.seeds} per configuration")
    print("\n".join(describe(plan)), flush=True)
    if not plan.pending and not settings.resume:
        print("nothing to run: every seed of these configurations is in the store")
        return 0
    from raydaa.io.ray_connection import connect_ray
    from raydaa.io.storage import resolve
    from raydaa.sweep.replicate import run_replicates
    from raydaa.sweep.report_refresh import ReportRefreshCallback

    connect_ray(address)
    results = resolve(settings.results)
    from raydaa.config.scenario import load_scenario

    scenario = load_scenario(settings.scenario).name
    where = run_replicates(settings, [ReportRefreshCallback(results, scenario)], plan)
    interrupted = where.pop("interrupted")
    print("\nreplicates interrupted:" if interrupted else "\nreplicates done:")
    for key, value in where.items():
        print(f"  {key:<16} {value}")
    if interrupted:
        again = " ".join(a for a in argv if a != "--resume")
        print(f"finished trials keep their rows; continue with:\n  raydaa {command} {again} --resume",
              flush=True)  # fmt: skip
        return 130
    print(f"report: raydaa report --scenario {scenario} --results {results} (rows of one "
          "configuration at several seeds are its replicates)")  # fmt: skip
    return 0
