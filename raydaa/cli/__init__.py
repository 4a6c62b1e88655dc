"""`raydaa` command line: one subcommand per capability, each a module with its own main()."""

from __future__ import annotations

import sys

# subcommand -> ("module:function", one-line help); modules are imported lazily so
# `raydaa --help` does not pay for torch/ray imports.
SUBCOMMANDS = {
    "search": ("raydaa.cli.search:search_main", "sweep one method's space with Ray Tune (grid or Optuna)"),
    "replicate": ("raydaa.cli.replicate:main", "rerun a method's top-K configurations with other seeds"),
    "init": (
        "raydaa.cli.init:main",
        "write a commented scenario YAML for your model, data, judge and hardware",
    ),
    "sft": ("raydaa.cli.stages:sft_main", "stage 1: SFT, registered as the scenario's reference"),
    "align": ("raydaa.cli.stages:align_main", "stage 2: one alignment run of one method and config"),
    "data": ("raydaa.cli.data:main", "`data check`: validate a scenario's or a file's data"),
    "benchmark": (
        "raydaa.cli.benchmark:main",
        "write a checkpoint's AlpacaEval / Arena-Hard answers (and score AlpacaEval)",
    ),
    "dashboard": ("raydaa.cli.dashboard:main", "live sweep panels: Prometheus + raydaa's Grafana dashboard"),
    "report": ("raydaa.cli.report:main", "Pareto fronts, best-config tables and β plots"),
    "compare": ("raydaa.cli.compare:main", "is A really better than B? paired tests on the same prompts"),
    "evaluate": ("raydaa.cli.evaluate:main", "any checkpoint on a scenario's yardstick (quality, KL)"),
    "theory": (
        "raydaa.cli.theory:main",
        "gradient collinearity of the DAA losses (paper Thms 3.4-3.6)",
    ),
    "toy": ("raydaa.cli.toy:main", "paper App. H: pairwise vs pointwise ranking MLP, Ray Tune"),
    "study": (
        "raydaa.cli.study:main",
        "the paper's RQ1-RQ4 (Tables 1-2, Figures 1, 3, 5) composed from sweeps",
    ),
}


def usage() -> str:
    lines = ["usage: raydaa <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `raydaa <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"raydaa: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    import importlib

    module, function = SUBCOMMANDS[name][0].split(":")
    try:
        return getattr(importlib.import_module(module), function)(rest)
    except KeyboardInterrupt:
        # Every stage publishes only complete results (atomic writes, rows per trial), so
        # an interrupt loses only the work in flight; the command itself resumes.
        print(
            f"\nraydaa {name}: interrupted; finished results are kept. Run the same command "
            "again to continue (`raydaa search ... --resume` for a sweep).",
            file=sys.stderr,
            flush=True,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
