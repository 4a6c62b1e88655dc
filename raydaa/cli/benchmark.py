"""`raydaa benchmark`: the arguments of raydaa.evaluate.benchmarks_export.export_checkpoint."""

from __future__ import annotations

import argparse

from raydaa.cli.options import add_search_spaces_option
from raydaa.config.defaults import DEFAULT_SCENARIO


def main(argv: list[str] | None = None) -> int:
    """`raydaa benchmark`: export a checkpoint's answers to AlpacaEval / Arena-Hard."""
    parser = argparse.ArgumentParser(prog="raydaa benchmark", description=main.__doc__)
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, help="generation settings and judge config")
    parser.add_argument("--policy", required=True, help="the policy's HF checkpoint folder")
    parser.add_argument("--benchmark", choices=["alpaca_eval", "arena_hard"], required=True)
    parser.add_argument("--prompts", help="local prompts file (default: judge.benchmark_prompts)")
    parser.add_argument("--out", default="benchmark_exports", help="output folder")
    parser.add_argument("--name", help="generator / model name (default: <scenario>-<checkpoint>)")
    parser.add_argument("--max-prompts", type=int, help="only the first N prompts (a smoke test)")
    add_search_spaces_option(parser)
    args = parser.parse_args(argv)

    # after parsing: `raydaa benchmark --help` does not import torch
    from raydaa.evaluate.benchmarks_export import export_checkpoint

    for outcome in export_checkpoint(
        args.scenario,
        args.policy,
        args.benchmark,
        args.out,
        prompts=args.prompts,
        name=args.name,
        max_prompts=args.max_prompts,
    ):
        print(outcome.note)
    return 0
