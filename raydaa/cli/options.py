"""Options every `raydaa` command shares, kept free of heavy imports (`raydaa report` and
`raydaa --help` must not pay for torch, Ray or transformers)."""

from __future__ import annotations

import argparse
import dataclasses

from raydaa.cli.values import loss_value
from raydaa.config.defaults import DEFAULT_RESULTS, DEFAULT_SCENARIO
from raydaa.core.methods import LOSS_DOMAINS, LOSS_FIELD_TYPES, LossConfig


class _SearchSpaces(argparse.Action):
    """Sets `$RAYDAA_SEARCH_SPACES` as the flag is parsed, before any scenario or space is
    read: this process and the Ray workers it starts then see the same folders."""

    def __call__(self, parser, namespace, values, option_string=None):
        from raydaa.config.loading import ConfigError
        from raydaa.config.space_folders import use_search_spaces

        try:
            use_search_spaces([values])
        except ConfigError as err:
            parser.error(str(err))
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


def add_search_spaces_option(parser: argparse.ArgumentParser) -> None:
    """--search-spaces DIR (repeatable): the user's search-space folders over the shipped ones."""
    parser.add_argument(
        "--search-spaces",
        metavar="DIR",
        action=_SearchSpaces,
        help="a folder of your own scenarios/, methods/, single_stage/ YAML files: a file "
        "there replaces the shipped one of the same path, others add to them (also "
        "$RAYDAA_SEARCH_SPACES; may be given more than once, the last one wins)",
    )


def add_location_options(parser: argparse.ArgumentParser, *, address: bool = True) -> None:
    """--scenario, --search-spaces, --results and (for commands that start Ray) --address."""
    parser.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        help="scenario name or YAML path (default: %(default)s)",
    )
    add_search_spaces_option(parser)
    parser.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        help="results directory, shared (NFS/EFS) on a cluster, or s3://bucket/prefix, "
        "gs://bucket/prefix (default: %(default)s)",
    )
    if address:
        parser.add_argument(
            "--address",
            default=None,
            help="Ray cluster address (default: $RAY_ADDRESS, else a fresh local Ray)",
        )


def add_loss_options(parser: argparse.ArgumentParser) -> None:
    """One flag per LossConfig field (`lambda_` -> `--lambda`, `sft_weight` -> `--sft-weight`),
    with its type, default, choices and help from the field itself."""
    for spec in dataclasses.fields(LossConfig):
        flag = "--" + spec.name.rstrip("_").replace("_", "-")
        kwargs: dict = {"dest": spec.name, "help": spec.metadata.get("help")}
        if "choices" in spec.metadata:
            kwargs["choices"] = spec.metadata["choices"]
        else:
            # a numeric field's domain is checked at parse time (exit 2, the flag named)
            numeric = spec.name in LOSS_DOMAINS
            kwargs["type"] = loss_value(spec.name) if numeric else LOSS_FIELD_TYPES[spec.name]
            kwargs["metavar"] = spec.name.rstrip("_").upper()
        if spec.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = spec.default
            if spec.default is not None:
                kwargs["help"] = f"{kwargs['help']} (default: %(default)s)"
        parser.add_argument(flag, **kwargs)


def scenario_or_exit(parser: argparse.ArgumentParser, name: str):
    """The scenario named or at a path; a bad one ends the command with argparse's error
    (usage, the file and key, exit 2) before anything starts."""
    from raydaa.config.loading import ConfigError
    from raydaa.config.scenario import load_scenario

    try:
        return load_scenario(name)
    except ConfigError as err:
        parser.error(str(err))


def data_ready(prog: str, scenario, which: tuple[str, ...]) -> bool:
    """The scenario's data sources `which` pass the preflight checks (raydaa.data.preflight)
    before Ray starts; when not, the reason is printed for `prog` and False returned
    (the command then exits 2)."""
    import sys

    from raydaa.data.errors import DataValidationError
    from raydaa.data.preflight import preflight

    try:
        preflight(scenario, which)
    except DataValidationError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return False
    return True


def add_curve_options(parser: argparse.ArgumentParser) -> None:
    """--log-to (repeatable), --mlflow-uri, --wandb-project: where trials' training curves go."""
    group = parser.add_argument_group("training curves (docs/watching.md)")
    group.add_argument(
        "--log-to", action="append", metavar="BACKEND",
        help="tensorboard, mlflow or wandb: every trial's per-step training metrics, "
        "intermediate and final quality/KL and configuration go there; repeat the flag "
        "(or give a comma list) for several, `none` for none (default: tensorboard, in the "
        "Tune experiment's trial directories)",
    )  # fmt: skip
    group.add_argument(
        "--mlflow-uri", default=None, metavar="URI",
        help="MLflow tracking URI for --log-to mlflow (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<results>/<scenario>/mlflow.db)",
    )  # fmt: skip
    group.add_argument(
        "--wandb-project", default=None, metavar="NAME",
        help="W&B project for --log-to wandb (default: $WANDB_PROJECT, else "
        "raydaa-<scenario>); WANDB_MODE=offline logs without a network",
    )  # fmt: skip


def curve_backends_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple:
    """The backends of --log-to, checked before anything starts: an unknown name, or one
    whose library is not installed (naming the extra to install), is argparse's error."""
    from raydaa.sweep.curve_loggers.settings import missing_package, parse_backends

    try:
        backends = parse_backends(args.log_to)
    except ValueError as err:
        parser.error(str(err))
    if problem := missing_package(backends):
        parser.error(problem)
    return backends
