"""Options every `raydaa` command shares, kept free of heavy imports (`raydaa report` and
`raydaa --help` must not pay for torch, Ray or transformers)."""

from __future__ import annotations

import argparse

DEFAULT_RESULTS = "raydaa_results"
"""Where results go when --results is not given: relative to the working directory."""
DEFAULT_SCENARIO = "tiny"


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
