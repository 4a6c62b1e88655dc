"""`raydaa evaluate`: any checkpoint on a scenario's yardstick.

The same evaluation a sweep's trial gets (raydaa.evaluate.policy.evaluate_policy: the
scenario's validation prompts and sampling, its judge and baseline, KL to the reference
with k1 and k3), for a checkpoint trained anywhere. Plain torch in this process: no Ray.
With `--name` the result joins the results store as a row of method "external", with its
per-prompt records, so reports and paired comparisons can place it among the trials.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from raydaa.cli.options import add_location_options, data_ready, scenario_or_exit

EXTERNAL = "external"
"""The store's method column for a checkpoint evaluated by `raydaa evaluate --name`."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A --name becomes part of a file name (`external-<name>.parquet`)."""
SUMMARY_KEYS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raydaa evaluate",
        description=(
            "Evaluate any checkpoint exactly as a sweep's trials are evaluated: the scenario's "
            "validation prompts and sampling, its judge against its baseline, KL to the "
            "reference (k1, k3). Runs in this process; needs no Ray."
        ),
    )
    add_location_options(p, address=False)
    p.add_argument("--policy", required=True, help="the checkpoint: an HF model folder or URI")
    p.add_argument(
        "--reference",
        help="the reference policy for KL and the baseline answers (default: the "
        "scenario's registered reference, <results>/<scenario>/reference.json)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the metrics to FILE as JSON")
    p.add_argument(
        "--name",
        help="add the result to the results store as trial `external-NAME` (method "
        "external) with its per-prompt records; the same NAME again replaces it",
    )
    return p


def checkpoint_or_none(path: str) -> str | None:
    """The checkpoint's storage path when it holds an HF config.json, else None."""
    from raydaa.io import storage

    try:
        where = storage.resolve(path)
    except ValueError:
        return None
    return where if storage.exists(storage.join(where, "config.json")) else None


def resolve_reference(args, scenario) -> str | None:
    """--reference, else the scenario's registered reference (None: there is none)."""
    if args.reference:
        return args.reference
    from raydaa.train.stages import reference_record

    record = reference_record(args.results, scenario)
    return record["path"] if record else None


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    # every argument is checked before any model is loaded
    if args.name is not None and not NAME.fullmatch(args.name):
        p.error(
            f"--name {args.name!r}: expected 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it names the row's file: external-NAME.parquet)"
        )
    if args.json and not Path(args.json).resolve().parent.is_dir():
        p.error(f"--json {args.json}: no such folder {Path(args.json).resolve().parent}")
    scenario = scenario_or_exit(p, args.scenario)
    policy = checkpoint_or_none(args.policy)
    if policy is None:
        p.error(f"--policy {args.policy}: expected a model folder with config.json, found none")
    reference = resolve_reference(args, scenario)
    if reference is None:
        print(
            f"raydaa evaluate: scenario {scenario.name} has no reference policy in "
            f"{args.results}; run `raydaa sft --scenario {scenario.name}` first, or give "
            "--reference PATH",
            file=sys.stderr,
        )
        return 2
    found = checkpoint_or_none(reference)
    if found is None:
        p.error(f"reference {reference}: expected a model folder with config.json, found none")
    reference = found
    if not data_ready("raydaa evaluate", scenario, ("validation",)):
        return 2

    metrics, records = evaluate(policy, reference, scenario)
    print(summary_line(scenario.name, metrics), flush=True)
    out: dict[str, Any] = {
        "scenario": scenario.name, "policy": policy, "reference": reference, **metrics,
    }
    if args.name is not None:
        out |= store(args.results, scenario, args.name, policy, reference, metrics, records)
        print(f"stored as {out['trial_id']}: row {out['row_path']}, records {out['records_path']}")
    if args.json:
        clean = {k: json_value(v) for k, v in out.items()}
        Path(args.json).write_text(json.dumps(clean, indent=2, default=str) + "\n")
    return 0


def evaluate(policy: str, reference: str, scenario) -> tuple[dict[str, Any], list[dict]]:
    """The trial's evaluation of `policy`, here: (scalar metrics, per-prompt records)."""
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.io import storage

    # transformers reads local files: object-store checkpoints are copied to this machine
    metrics = evaluate_policy(storage.local_copy(policy), storage.local_copy(reference), scenario)
    records = metrics.pop("records")
    return metrics, records


def summary_line(scenario: str, m: dict[str, Any]) -> str:
    """`tiny: quality 0.500 [0.482, 0.518], KL 0.000 [0.000, 0.000] (k3 0.000), 200
    prompts, 9 s`."""
    return (
        f"{scenario}: quality {m['quality']:.3f} [{m['quality_low']:.3f}, "
        f"{m['quality_high']:.3f}], KL {m['kl']:.3f} [{m['kl_low']:.3f}, {m['kl_high']:.3f}] "
        f"(k3 {m['kl_k3']:.3f}), {m['eval_prompts']} prompts, {m['eval_seconds']:.0f} s"
    )


def store(results, scenario, name, policy, reference, metrics, records) -> dict[str, str]:
    """The evaluation as a results-store row of method external, and its records."""
    from raydaa.io.prompt_records import write_records
    from raydaa.io.results_store import SCHEMA, write_row

    trial_id = f"{EXTERNAL}-{name}"
    row = {k: v for k, v in metrics.items() if k in SCHEMA.names}
    row |= {
        "trial_id": trial_id,
        "scenario": scenario.name,
        "method": EXTERNAL,
        "seed": None,  # not one of the sweep's seeds: trained elsewhere
        "status": "finished",
        "error": "",
        "checkpoint_path": policy,
        "reference_path": reference,
    }
    records_path = write_records(results, scenario.name, EXTERNAL, trial_id, records)
    return {
        "trial_id": trial_id,
        "row_path": write_row(results, scenario.name, row),
        "records_path": records_path,
    }


def json_value(value: Any) -> Any:
    """NaN and infinities as null: the file stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
