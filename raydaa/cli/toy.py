"""`raydaa toy`: the arguments of raydaa.study.toy_tune.run_toy_sweep, and its best
configurations printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from raydaa.study import toy
from raydaa.study.toy_tune import GRIDS, run_toy_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa toy",
        description=(
            "Paper Appendix H / Figure 4: pairwise (Bradley-Terry) vs pointwise ranking loss "
            "on a 1-hidden-layer ReLU MLP of size 1 and 3, lr × β tuned with Ray Tune."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path("raydaa_results/toy"), help="report dir (%(default)s)"
    )
    parser.add_argument(
        "--runs", type=int, default=toy.RUNS, help="seeds per configuration (%(default)s)"
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)"
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the 2000 triplets")
    parser.add_argument("--epochs", type=int, default=toy.ToySettings.epochs)
    parser.add_argument("--batch-size", type=int, default=toy.ToySettings.batch_size)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="paper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    grid = GRIDS[args.grid]
    n_trials = len(grid.losses) * len(grid.hiddens) * len(grid.lrs)
    print(
        f"raydaa toy: {n_trials} Tune trials (loss × hidden × lr), each {len(grid.betas)} β × "
        f"{args.runs} runs trained as one batch of models",
        flush=True,
    )
    rows, paths, seconds = run_toy_sweep(
        args.out,
        runs=args.runs,
        grid=grid,
        data_seed=args.data_seed,
        settings=toy.ToySettings(epochs=args.epochs, batch_size=args.batch_size),
        address=args.address,
    )
    print("\nBest configuration per (loss, hidden size):\n")
    print(toy.best_table(toy.best_configs(rows)))
    print(
        f"\n{len(rows)} configurations in {seconds:.1f} s; wrote "
        + ", ".join(str(p) for p in paths.values())
    )
    return 0
