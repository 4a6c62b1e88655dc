"""`raydaa theory`: the arguments of raydaa.study.theory.run, and its tables printed."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from raydaa.study import theory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa theory", description=theory.__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("raydaa_results/theory"), help="where theory.csv/png go"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=8, help="preference pairs in the batch")
    parser.add_argument(
        "--ref-noise", type=float, default=0.3, help="reference = policy + this × std noise"
    )
    parser.add_argument(
        "--sum",
        action="store_true",
        help="summed log-probs instead of the paper's length-normalized ones",
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or not math.isfinite(args.ref_noise) or args.ref_noise <= 0:
        parser.error("--pairs must be >= 1 and --ref-noise > 0")
    rows = theory.run(args.out, args.seed, args.pairs, args.ref_noise, normalize=not args.sum)
    reduction = "summed" if args.sum else "length-normalized (paper §2.1)"
    print(f"Gradient cosine similarity, {args.pairs} pairs, {reduction} log-probs\n")
    print("Batch-mean gradient:\n" + theory.format_table(rows, "batch") + "\n")
    print(
        "Worst single pair (the paper's per-pair argument):\n"
        + theory.format_table(rows, "pair_min")
        + "\n"
    )
    print(f"wrote {args.out / 'theory.csv'} and {args.out / 'theory.png'}")
    return 0
