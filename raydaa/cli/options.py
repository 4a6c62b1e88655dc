"""Options every `raydaa` command shares, kept free of heavy imports (`raydaa report` and
`raydaa --help` must not pay for torch, Ray or transformers)."""

from __future__ import annotations

import argparse
import dataclasses

from raydaa.config.defaults import DEFAULT_RESULTS, DEFAULT_SCENARIO
from raydaa.core.methods import LOSS_FIELD_TYPES, LossConfig


def add_location_options(parser: argparse.ArgumentParser, *, address: bool = True) -> None:
    """--scenario, --results and (for commands that start Ray) --address."""
    parser.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        help="scenario name or YAML path (default: %(default)s)",
    )
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
            kwargs["type"] = LOSS_FIELD_TYPES[spec.name]
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
