"""`raydaa toy`: the paper's Appendix H toy example swept with Ray Tune.

One Tune trial per (loss, hidden size, lr), a grid search of 2 × 2 × 6 = 24 trials; each
trial trains every β of the appendix's grid × `--runs` seeds as one batch of independent
models (raydaa.study.toy.train_runs) and reports, per β, the mean test ranking accuracy with its
95% interval. The driver picks the best (lr, β) per (loss, hidden size) and writes the
table, the CSVs and a Figure-4-style plot under --out.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raydaa.study import toy


@dataclass(frozen=True)
class ToyGrid:
    losses: tuple[str, ...] = toy.LOSSES
    hiddens: tuple[int, ...] = toy.HIDDEN_SIZES
    lrs: tuple[float, ...] = toy.LEARNING_RATES
    betas: tuple[float, ...] = toy.BETAS


GRIDS = {
    "paper": ToyGrid(),
    # Hidden option for tests: both losses and sizes, one lr, two β's (4 small trials).
    "smoke": ToyGrid(lrs=(0.1,), betas=(1.0, 0.1)),
}


def toy_trial(config: dict[str, Any], *, betas, runs: int, data_seed: int, settings: dict) -> None:
    """One (loss, hidden, lr): train len(betas) × runs MLPs, report every β's summary."""
    import torch
    from ray import tune

    torch.set_num_threads(1)  # one CPU per trial; trials run side by side
    data = toy.make_triplets(seed=data_seed)
    start = time.perf_counter()
    results, _ = toy.train_runs(
        data,
        loss=config["loss"],
        hidden=config["hidden"],
        lr=config["lr"],
        betas=betas,
        seeds=range(runs),
        settings=toy.ToySettings(**settings),
    )
    rows = toy.summarize(config["loss"], config["hidden"], config["lr"], results)
    best = max(rows, key=lambda r: r.accuracy)
    tune.report(
        {
            "best_beta": best.beta,
            "best_accuracy": best.accuracy,
            "train_seconds": time.perf_counter() - start,
            # JSON text, not a nested list: Tune's loggers want flat scalar results.
            "configs_json": json.dumps([asdict(r) for r in rows]),
        }
    )


def run_toy_sweep(
    out: Path,
    *,
    runs: int = toy.RUNS,
    grid: ToyGrid = GRIDS["paper"],
    data_seed: int = 0,
    settings: toy.ToySettings = toy.DEFAULT_SETTINGS,
    address: str | None = None,
) -> tuple[list[toy.ConfigResult], dict[str, Path], float]:
    """Run the Tune grid, write the report; returns (all configs, report paths, seconds)."""
    # The classic Tune table shows exactly our columns (the newer output picks its own).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    start = time.perf_counter()
    from raydaa.io.ray_connection import connect_ray

    connect_ray(address)  # as every raydaa command: --address, $RAY_ADDRESS, or a fresh local Ray
    out = Path(out).resolve()
    trainable = tune.with_resources(
        tune.with_parameters(
            toy_trial,
            betas=grid.betas,
            runs=runs,
            data_seed=data_seed,
            settings=asdict(settings),
        ),
        {"CPU": 1},
    )
    param_space = {
        "loss": tune.grid_search(list(grid.losses)),
        "hidden": tune.grid_search(list(grid.hiddens)),
        "lr": tune.grid_search(list(grid.lrs)),
    }
    reporter = tune.CLIReporter(
        parameter_columns={"loss": "loss", "hidden": "hidden", "lr": "lr"},
        metric_columns={"best_beta": "best β", "best_accuracy": "best acc", "train_seconds": "s"},
        max_report_frequency=15,
        max_progress_rows=30,  # all 24 trials of the paper grid
    )
    name = time.strftime("toy-%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        # One worker process per CPU for the whole grid: no process start and torch import
        # per trial (the trial itself is seconds).
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out / "tune"),
            progress_reporter=reporter,
            verbose=1,
        ),
    )
    result_grid = tuner.fit()
    if result_grid.errors:
        raise RuntimeError(
            f"{len(result_grid.errors)} toy trial(s) failed; first: {result_grid.errors[0]}"
        )
    rows = [
        toy.ConfigResult(**row)
        for result in result_grid
        for row in json.loads(result.metrics["configs_json"])
    ]
    seconds = time.perf_counter() - start
    header = (
        f"{runs} runs per configuration, data seed {data_seed}, Adam, {settings.epochs} "
        f"epochs of minibatch {settings.batch_size}; Tune experiment {out / 'tune' / name}; "
        f"sweep wall time {seconds:.0f} s."
    )
    paths = toy.write_report(rows, out, header)
    return rows, paths, seconds

