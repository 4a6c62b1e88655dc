"""`raydaa compare A B`: is one variant's best configuration really better than another's?

Reads the scenario's results store and each trial's per-prompt records, and prints the
paired comparison of the two variants' best configurations (raydaa.report.comparisons):
A − B with its 95% interval, p, verdict and minimum detectable difference, then the same at
matched KL budgets (Holm over the budgets). --head-to-head also judges A's samples directly
against B's with the scenario's judge. Exit code 1 when the store cannot be read or the
best-vs-best comparison cannot be made (the reason is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from raydaa.cli.options import add_location_options, scenario_or_exit
from raydaa.report.select import ReportError


def _budgets(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"KL budgets: {text!r} is not a comma-separated list "
                                         "of numbers") from None  # fmt: skip
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"KL budgets: {text!r}; expected numbers >= 0")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raydaa compare",
        description="Paired, significance-tested comparison of two variants' best "
        "configurations on the same prompts (bootstrap interval, permutation p, verdict, "
        "minimum detectable difference), overall and at matched KL.",
    )
    for name in ("METHOD_A", "METHOD_B"):
        p.add_argument(name.lower(), metavar=name,
                       help="a variant: a method (dpo), its single-stage variant (orpo+sft), "
                       "or external (checkpoints evaluated with `raydaa evaluate --name`)")  # fmt: skip
    add_location_options(p, address=False)
    p.add_argument("--head-to-head", action="store_true",
                   help="also judge A's samples directly against B's with the scenario's "
                   "judge (an LLM judge calls its endpoint)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--budgets", type=_budgets, default=None, metavar="K1,K2",
                   help="KL budgets (default: the quartiles of the finished trials' KL)")  # fmt: skip
    p.add_argument("--resamples", type=int, default=10_000,
                   help="bootstrap / permutation resamples (default: %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default: %(default)s)")
    return p


def _line(c) -> str:
    if c.result is None:
        return f"skipped: {c.reason}"
    r = c.result
    winner = {"A better": f"{c.a} better", "B better": f"{c.b} better"}.get(c.verdict, c.verdict)
    holm = f" (Holm {c.p_holm:.3g})" if c.family != "best" else ""
    seeds = f", seeds {r.seeds[0]} vs {r.seeds[1]}" if r.seeds != (1, 1) else ""
    text = (f"A − B = {r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}] over {r.n} prompts"
            f"{seeds}, p = {r.p_value:.3g}{holm} ({r.test}); verdict: {winner}; "
            f"MDE {r.mde:.3f}")  # fmt: skip
    return text + (f"\n      ({c.note})" if c.note else "")


def _side(label: str, name: str, config: str, trials: tuple[str, ...], mean: float | None) -> str:
    quality = "" if mean is None else f", quality {mean:.3f} on the compared prompts"
    return f"  {label}  {name}: {config} (trial{'s' if len(trials) > 1 else ''} " \
           f"{', '.join(trials)}){quality}"  # fmt: skip


def _jsonable(value):
    """NaN -> null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _head_to_head(args, parse: argparse.ArgumentParser, rows, best, records_for, options):
    from raydaa.evaluate.judges import build_judge
    from raydaa.report.comparisons import head_to_head
    from raydaa.report.select import variant

    scenario = scenario_or_exit(parse, args.scenario)
    if scenario.judge is None:
        raise ValueError(f"scenario {scenario.name!r} has no judge")
    sides = []
    for name, trial in ((best.a, best.a_trials[0]), (best.b, best.b_trials[0])):
        row = next(r for r in rows if str(r["trial_id"]) == trial and variant(r) == name)
        records = records_for(row)
        if records is None:
            raise ValueError(f"trial {trial} ({name}) has no per-prompt records")
        sides.append(records)
    return head_to_head(build_judge(scenario.judge), *sides, options)


def main(argv: list[str] | None = None) -> int:
    from raydaa.io.prompt_records import read_records
    from raydaa.report.comparisons import Options, compare_variants
    from raydaa.report.select import load_rows

    parse = parser()
    args = parse.parse_args(argv)
    scenario = args.scenario
    if scenario.endswith((".yaml", ".yml")):
        scenario = scenario_or_exit(parse, scenario).name
    options = Options(resamples=args.resamples, seed=args.seed)
    try:
        rows = load_rows(args.results, scenario)
    except ReportError as err:
        print(f"raydaa compare: {err}", file=sys.stderr)
        return 1

    def records_for(row):
        return read_records(args.results, scenario, row["method"], str(row["trial_id"]))

    try:
        found = compare_variants(rows, args.method_a, args.method_b, records_for,
                                 args.budgets, options)  # fmt: skip
    except KeyError as err:
        print(f"raydaa compare: {err.args[0]}", file=sys.stderr)
        return 1
    best, at_kl = found[0], found[1:]
    r = best.result
    print(f"{best.a} vs {best.b}, scenario {scenario} ({args.results})")
    print(_side("A", best.a, best.a_config, best.a_trials, r.a_mean if r else None))
    print(_side("B", best.b, best.b_config, best.b_trials, r.b_mean if r else None))
    print(f"  best vs best: {_line(best)}")
    print(f"  at matched KL (each side's best config with KL ≤ budget; Holm over "
          f"{len(at_kl)} budgets):")  # fmt: skip
    for c in at_kl:
        configs = f"A {c.a_config} vs B {c.b_config}: " if c.result else ""
        print(f"    KL ≤ {c.budget:.4g}: {configs}{_line(c)}")
    if not at_kl:
        print("    no budget: no finished trial has a finite KL")
    duel = None
    if args.head_to_head:
        if r is None:
            print("  head to head: skipped (no best-vs-best comparison)")
        else:
            try:
                duel = _head_to_head(args, parse, rows, best, records_for, options)
            except (KeyError, ValueError) as err:
                print(f"raydaa compare: head to head: {err}", file=sys.stderr)
                return 1
            print(f"  head to head (A's samples judged against B's): A preferred on "
                  f"{0.5 + duel.difference:.3f} of {duel.n} prompts, "
                  f"{duel.difference:+.3f} [{duel.low:+.3f}, {duel.high:+.3f}] from 0.5, "
                  f"p = {duel.p_value:.3g}; MDE {duel.mde:.3f}")  # fmt: skip
    if args.json:
        payload = {
            "scenario": scenario, "a": best.a, "b": best.b,
            "best": dataclasses.asdict(best), "matched_kl": [dataclasses.asdict(c) for c in at_kl],
            "head_to_head": dataclasses.asdict(duel) if duel else None,
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
        print(f"json: {args.json}")
    return 0 if r is not None else 1
