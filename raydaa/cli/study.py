"""`raydaa study rq1|rq2|rq3|rq4`: one of the paper's research questions, end to end."""

from __future__ import annotations

import argparse
import sys

from raydaa.cli.options import add_location_options
from raydaa.study import STUDIES


def _methods(question: str) -> tuple[str, ...]:
    if question in ("rq1", "rq2"):
        return ("orpo", "asft")
    from raydaa.core.methods import METHODS

    return tuple(METHODS)


def _fractions(parser, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--fractions: expected comma-separated numbers, got {text!r}")
    bad = [v for v in values if not 0.01 <= v <= 1.0]
    if not values or bad:
        parser.error(f"--fractions: every share must be in [0.01, 1], got {text!r}")
    if len(set(values)) != len(values):
        parser.error(f"--fractions: repeated share in {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa study",
        description=(
            "One of the paper's research questions, composed from sweeps: rq1 (Table 1, base vs "
            "SFT init of ORPO/ASFT), rq2 (Figure 1, tempering ORPO/ASFT), rq3 (Table 2, "
            "Figure 3, all eight methods), rq4 (Figure 5, quality vs SFT data). Resumable: a "
            "re-run runs only the configurations without a row in the store. Output: "
            "<results>/<scenario>/study/<rq>/."
        ),
    )
    parser.add_argument("question", choices=STUDIES)
    add_location_options(parser)
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of the question's methods (rq1, rq2: orpo,asft; "
        "rq3, rq4: the eight)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few trials per sweep, to check the wiring: per space the two largest β <= 1, the "
        "largest lr and λ, one epoch; rq4: the base model and 100%% only",
    )
    parser.add_argument(
        "--fractions",
        default=None,
        help="rq4: comma-separated shares of the SFT data (default: 0.01,0.03,0.05,0.1,0.25,0.5,1)",
    )
    parser.add_argument(
        "--no-base", action="store_true", help="rq4: leave out the base-model initialization"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="rerun configurations whose only rows are failed trials",
    )
    parser.add_argument(
        "--max-concurrent-trials",
        type=int,
        default=None,
        help="trials at once (default: what the cluster's total CPUs/GPUs hold)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each sweep's configurations, what the store already holds and what would "
        "run; starts nothing",
    )
    args = parser.parse_args(argv)

    allowed = _methods(args.question)
    methods = allowed
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in allowed]
        if unknown or not methods:
            parser.error(
                f"--methods: {args.question} runs {', '.join(allowed)}; got {args.methods!r}"
            )
        methods = tuple(m for m in allowed if m in methods)  # the question's order
    if args.question != "rq4" and (args.fractions or args.no_base):
        parser.error("--fractions and --no-base are rq4 options")
    if args.max_concurrent_trials is not None and args.max_concurrent_trials < 1:
        parser.error("--max-concurrent-trials must be >= 1")

    from raydaa.config.loading import ConfigError
    from raydaa.config.scenario import load_scenario
    from raydaa.study.runner import Study, StudyError

    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as err:
        parser.error(str(err))
    kwargs: dict = {"methods": methods}
    if args.question == "rq4":
        from raydaa.study.rq4 import FRACTIONS, initializations

        default = (1.0,) if args.smoke else FRACTIONS
        fractions = _fractions(parser, args.fractions) if args.fractions else default
        kwargs["inits"] = initializations(fractions, base=not args.no_base)

    runner = None
    if not args.dry_run:
        from raydaa.study.ray_runner import RayRunner

        runner = RayRunner(args.address, args.max_concurrent_trials)
    try:
        study = Study(
            scenario,
            args.results,
            runner,
            smoke=args.smoke,
            retry_failed=args.retry_failed,
            dry_run=args.dry_run,
        )
        import importlib

        written = importlib.import_module(f"raydaa.study.{args.question}").run(study, **kwargs)
    except (StudyError, ConfigError) as err:
        print(f"raydaa study {args.question}: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        refs = study.planned_references
        print(
            f"dry run: {study.planned_trials} trials to run"
            + (f"; references to prepare: {len(refs)}" if refs else "")
        )
        return 0
    print(f"\n{args.question} done: {len(written)} files in {written[-1].rsplit('/', 1)[0]}")
    print(f"  {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
