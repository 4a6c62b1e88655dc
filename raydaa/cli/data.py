"""`raydaa data check`: validate a scenario's or a file's data before a run."""

from __future__ import annotations

import argparse

from raydaa.cli.options import add_search_spaces_option
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raydaa data", description="Validate data before a run.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser(
        "check", help="count bad rows by reason; non-zero exit above the threshold"
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--scenario", help="check the scenario's SFT, preference and validation data"
    )
    source.add_argument(
        "path", nargs="?",
        help="a .jsonl/.json/.csv/.parquet/.arrow file, a dataset folder, or a hub dataset id",
    )
    check.add_argument(
        "--threshold", type=float, default=0.01, help="largest tolerated share of bad rows"
    )
    check.add_argument("--split", default="train")
    check.add_argument(
        "--tokenizer", default=None, help="tokenizer path, enables the prompt-length check"
    )
    check.add_argument("--max-length", type=int, default=None)
    add_search_spaces_option(check)
    args = parser.parse_args(argv)
    from raydaa.data.check import data_check_main, scenario_check_main

    if args.path:
        return data_check_main(
            args.path,
            args.threshold,
            split=args.split,
            tokenizer=args.tokenizer,
            max_length=args.max_length,
        )
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as err:
        check.error(str(err))
    return scenario_check_main(scenario, args.threshold)
