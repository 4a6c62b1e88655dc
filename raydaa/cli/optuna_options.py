"""`raydaa search`'s Optuna flags: declared and checked here, so argparse refuses a bad
combination before Ray starts. Each applies to `--mode optuna` only; given with the grid
mode it is an error that says so, rather than a flag silently ignored."""

from __future__ import annotations

import argparse

from raydaa.config.objective import FORMS, parse_objective
from raydaa.config.optuna_space import SAMPLERS, SPACE_KINDS

DEFAULTS = {"space": "grid", "sampler": "tpe", "objective": "quality"}


def add_optuna_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Optuna (with --mode optuna)")
    group.add_argument(
        "--space", choices=SPACE_KINDS, default=None,
        help="grid: a categorical over the grid's values (default); continuous: β and lr "
        "(and λ where the grid has several) log-uniform within the grid's bounds",
    )  # fmt: skip
    group.add_argument(
        "--sampler", choices=SAMPLERS, default=None,
        help="tpe: Optuna's TPESampler (default); gp: GPSampler; both seeded with --seed",
    )  # fmt: skip
    group.add_argument(
        "--objective", default=None, metavar="OBJECTIVE",
        help=f"{FORMS}: quality maximized (default), quality maximized subject to "
        "KL <= K, or the (quality max, KL min) Pareto front",
    )  # fmt: skip
    group.add_argument(
        "--multi-objective", action="store_true", help="the same as --objective pareto"
    )
    group.add_argument(
        "--no-warm-start", dest="warm_start", action="store_false",
        help="do not add the results store's rows of this space to a new study",
    )  # fmt: skip


def check_optuna_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse Optuna flags outside --mode optuna and a malformed --objective; fill the
    defaults in (args.objective stays text: SearchSettings parses it again)."""
    given = [f"--{k}" for k in DEFAULTS if getattr(args, k) is not None]
    given += ["--multi-objective"] if args.multi_objective else []
    given += ["--no-warm-start"] if not args.warm_start else []
    if args.mode != "optuna" and given:
        parser.error(f"{', '.join(given)}: only with --mode optuna (the grid mode runs every "
                     "configuration of the grid)")  # fmt: skip
    if args.multi_objective and args.objective not in (None, "pareto"):
        parser.error(f"--multi-objective is --objective pareto; it contradicts --objective "
                     f"{args.objective}")  # fmt: skip
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, "pareto" if key == "objective" and args.multi_objective else default)
    try:
        parse_objective(args.objective)
    except ValueError as err:
        parser.error(str(err))
