"""`raydaa sft` and `raydaa align`: the two training stages from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from raydaa.cli.options import add_location_options, add_loss_options, data_ready, scenario_or_exit
from raydaa.cli.values import non_negative_int, positive_float, positive_int, share
from raydaa.io.ray_connection import connect_ray


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
        "--fraction", type=share, default=1.0, help="share of the SFT data, 0.01-1 (paper RQ4)"
    )
    parser.add_argument(
        "--base", action="store_true", help="register the base model, no SFT (paper RQ1)"
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain even if a matching reference exists"
    )
    args = parser.parse_args(argv)
    scenario = scenario_or_exit(parser, args.scenario)
    from raydaa.data.preflight import ALL_SOURCES
    from raydaa.data.validation import DataValidationError
    from raydaa.train.stages import run_sft

    if not data_ready("raydaa sft", scenario, ("preference", "validation") if args.base else ALL_SOURCES):
        return 2
    connect_ray(args.address)
    try:
        record = run_sft(
            scenario,
            results=args.results,
            fraction=args.fraction,
            base_init=args.base,
            force=args.force,
        )
    except DataValidationError as err:  # checked before any training
        print(f"raydaa sft: {err}", file=sys.stderr)
        return 2
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
    parser.add_argument("--lr", type=positive_float, required=True, help="peak learning rate (> 0)")
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="default: the scenario's align.epochs"
    )
    parser.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help="stop after this many optimizer steps (a smoke test; the lr schedule keeps its length)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="training seed (data order, worker RNGs); default: the scenario's seed. "
        "Evaluation samples with the scenario's seed whatever this is",
    )
    args = parser.parse_args(argv)
    from raydaa.config.search_space import AlignConfig

    try:  # the loss checks its own fields, before anything is loaded or trained
        config = AlignConfig.from_config(vars(args))
    except ValueError as err:
        parser.error(str(err))
    scenario = scenario_or_exit(parser, args.scenario)
    from raydaa.data.validation import DataValidationError
    from raydaa.train.stages import prepare_alignment, reference_record, run_alignment

    if reference_record(args.results, scenario) is None:
        print(
            f"raydaa align: scenario {scenario.name} has no reference policy in {args.results}; "
            f"run `raydaa sft --scenario {scenario.name}` first",
            file=sys.stderr,
        )
        return 2
    if not data_ready("raydaa align", scenario, ("preference", "validation")):
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
