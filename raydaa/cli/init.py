"""`raydaa init`: write a commented scenario YAML for one's own model, data and hardware."""

from __future__ import annotations

import argparse
import sys

from raydaa.cli.values import non_negative_int, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raydaa init",
        description=(
            "Write a scenario YAML: the paper's recipe (Table 4), generation (Table 8) and "
            "grids (Tables 4, 6), resources sized for the hardware and the model, and the "
            "judge; every value commented with where it came from. Guide: docs/init.md."
        ),
    )
    parser.add_argument("--model", required=True, help="transformers model id or local folder")
    parser.add_argument(
        "--preference-data", required=True, help="preference pairs: hub id, file or folder"
    )
    parser.add_argument("--sft-data", help="SFT data (default: the preference data's rows)")
    parser.add_argument(
        "--validation-data",
        help="held-out pairs (default: the preference data's test split; needed for a file)",
    )
    parser.add_argument(
        "--judge",
        default="alpaca_eval",
        help="reward_model:PATH, openai:MODEL or alpaca_eval (default: %(default)s)",
    )
    parser.add_argument(
        "--gpus-per-node", type=non_negative_int, default=0, help="0: a CPU scenario (default)"
    )
    parser.add_argument("--nodes", type=positive_int, default=1, help="default: %(default)s")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value, dotted key, VALUE as YAML (repeatable): "
        "--set max_length=1024 --set 'grids.dpo.lrs=[1.0e-6]'",
    )
    parser.add_argument("--out", required=True, help="the scenario file to write (.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = parser.parse_args(argv)
    from raydaa.config.init_scenario import InitRequest, parse_judge, write_scenario

    try:
        parse_judge(args.judge)  # before the model's config is read
        request = InitRequest(
            model=args.model,
            preference_data=args.preference_data,
            sft_data=args.sft_data,
            validation_data=args.validation_data,
            judge=args.judge,
            gpus_per_node=args.gpus_per_node,
            nodes=args.nodes,
            overrides=args.overrides,
        )
        path, scenario, size = write_scenario(request, args.out, force=args.force)
    except (ValueError, FileExistsError) as err:  # ConfigError is a ValueError
        parser.error(str(err))
    if size.parameters is None:
        print(f"raydaa init: {args.model}: {size.note}; sized as an 8B model (ZeRO-3, micro "
              "batch 1), as the file's comments say", file=sys.stderr)
    res = scenario.resources
    print(
        f"wrote {path}: scenario {scenario.name}, {res.num_workers} worker(s) "
        f"({'GPU' if res.use_gpu else 'CPU'}), ZeRO-{res.zero_stage}\n"
        f"next: raydaa data check --scenario {path}\n"
        f"      raydaa search --scenario {path} --method dpo"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
