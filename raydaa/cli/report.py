"""`raydaa report`: the arguments of raydaa.report.build.build_report, and where it wrote."""

from __future__ import annotations

import argparse
import sys

from raydaa.cli.options import add_location_options
from raydaa.report.build import PLOTLY_JS, build_report
from raydaa.report.select import ReportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa report",
        description=(
            "Tables (paper Tables 2 and 7), Pareto fronts (Figures 3 and 6), the β-sensitivity "
            "plot (Figure 1) and KL-β rank correlations from a scenario's results store."
        ),
    )
    add_location_options(parser, address=False)
    parser.add_argument(
        "--out", default=None, help="output directory (default: <results>/<scenario>/report)"
    )
    parser.add_argument(
        "--plotly-js",
        choices=tuple(PLOTLY_JS),
        default="directory",
        help="how the HTML pages load plotly.js: directory (one plotly.min.js beside them, "
        "offline), inline (self-contained, ~4.8 MB each), cdn (needs the network)",
    )
    args = parser.parse_args(argv)
    scenario = args.scenario
    if scenario.endswith((".yaml", ".yml")):
        from raydaa.config.loading import ConfigError
        from raydaa.config.scenario import load_scenario

        try:
            scenario = load_scenario(scenario).name
        except ConfigError as err:
            parser.error(str(err))
    try:
        written = build_report(args.results, scenario, args.out, args.plotly_js)
    except ReportError as err:
        print(f"raydaa report: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {written[-1].rsplit('/', 1)[0]}")
    print(f"report: {written[-1]}")
    return 0
