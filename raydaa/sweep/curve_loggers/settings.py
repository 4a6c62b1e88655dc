"""Where a sweep's training curves go (`raydaa search --log-to`), chosen and checked in the
command's process before anything is computed; the settings then travel to every trial.
Light to import: no Ray, no tracking library until one is asked for."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

BACKENDS = ("tensorboard", "mlflow", "wandb")
DEFAULT_BACKENDS = ("tensorboard",)
PACKAGES = {"tensorboard": ("tensorboardX", "raydaa"), "mlflow": ("mlflow", "raydaa[mlflow]"),
            "wandb": ("wandb", "raydaa[wandb]")}
"""backend -> (the module it imports, what to pip install for it)."""


class CurveSettingsError(ValueError):
    """A `--log-to` choice that cannot work (a library not installed, no MLflow store)."""


@dataclass(frozen=True)
class CurveSettings:
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    mlflow_uri: str | None = None
    mlflow_experiment_id: str | None = None
    """The sweep's MLflow experiment, created once by the command (prepare_curves)."""
    wandb_project: str | None = None
    wandb_mode: str | None = None
    """online, offline or disabled: the command's $WANDB_MODE, handed to every trial."""
    wandb_dir: str | None = None

    def describe(self) -> str:
        """`tensorboard (<trial dir>/steps/), mlflow (sqlite:///... experiment raydaa-tiny), ...`"""
        where = {"tensorboard": "<trial dir>/steps/ of the Tune experiment",
                 "mlflow": f"{self.mlflow_uri}, experiment id {self.mlflow_experiment_id}",
                 "wandb": f"project {self.wandb_project}, {self.wandb_mode or 'online'}"
                          + (f", {self.wandb_dir}/wandb" if self.wandb_mode == "offline" else "")}
        return "; ".join(f"{b} ({where[b]})" for b in self.backends) or "none"


def parse_backends(values: list[str] | None) -> tuple[str, ...]:
    """`--log-to` values (repeated and/or comma-separated) -> backends; none given: the
    default (TensorBoard); `none`: nothing. Raises ValueError on an unknown one."""
    if not values:
        return DEFAULT_BACKENDS
    names = [n.strip().lower() for v in values for n in v.split(",") if n.strip()]
    unknown = sorted(set(names) - {*BACKENDS, "none"})
    if unknown:
        raise ValueError(f"--log-to {', '.join(unknown)}: choose from {', '.join(BACKENDS)} "
                         "or none")
    if "none" in names and len(set(names)) > 1:
        raise ValueError("--log-to none turns curve logging off; it cannot go with "
                         f"{', '.join(sorted(set(names) - {'none'}))}")
    return tuple(dict.fromkeys(n for n in names if n != "none"))


def missing_package(backends: tuple[str, ...]) -> str | None:
    """What to install for the first backend whose library is not installed, else None."""
    for backend in backends:
        module, extra = PACKAGES[backend]
        if importlib.util.find_spec(module) is None:
            return (f"--log-to {backend} needs the {module} package, which is not installed: "
                    f"pip install '{extra}'")
    return None


def prepare_curves(backends: tuple[str, ...], *, results: str, scenario: str,
                   mlflow_uri: str | None = None,
                   wandb_project: str | None = None) -> CurveSettings:
    """The sweep's settings: MLflow's tracking URI (the flag, else $MLFLOW_TRACKING_URI,
    else SQLite in `<results>/<scenario>/mlflow.db`) and its experiment `raydaa-<scenario>`,
    created here once (a new SQLite store's schema is made by the first client: trials
    starting together would race to make it); W&B's project (the flag, else
    $WANDB_PROJECT, else `raydaa-<scenario>`), mode ($WANDB_MODE) and directory
    ($WANDB_DIR, else `<results>/<scenario>`: offline runs go to its wandb/ folder)."""
    from raydaa.io import storage

    missing = missing_package(backends)
    if missing:
        raise CurveSettingsError(missing)
    root = None if storage.is_uri(results) else os.path.join(results, scenario)
    uri = experiment_id = None
    if "mlflow" in backends:
        uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            if root is None:
                raise CurveSettingsError(
                    f"--log-to mlflow with results in {results}: SQLite needs a local path; "
                    "pass --mlflow-uri (e.g. http://mlflow-host:5000)")
            os.makedirs(root, exist_ok=True)
            uri = f"sqlite:///{os.path.abspath(root)}/mlflow.db"
        experiment_id = mlflow_experiment(uri, f"raydaa-{scenario}")
    wandb_dir = None
    if "wandb" in backends:
        wandb_dir = os.path.abspath(os.environ.get("WANDB_DIR") or root or os.getcwd())
        check_wandb_login()
    return CurveSettings(
        backends=backends, mlflow_uri=uri, mlflow_experiment_id=experiment_id,
        wandb_project=wandb_project or os.environ.get("WANDB_PROJECT") or f"raydaa-{scenario}",
        wandb_mode=os.environ.get("WANDB_MODE"), wandb_dir=wandb_dir,
    )  # fmt: skip


def mlflow_experiment(uri: str, name: str) -> str:
    """The id of MLflow experiment `name` at `uri`, created when it is not there."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def check_wandb_login() -> None:
    """Online W&B needs an API key ($WANDB_API_KEY or `wandb login`): checked here, as Ray's
    setup_wandb would in every trial, so a missing one stops the sweep before it starts."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    from ray.air.integrations.wandb import _set_api_key  # setup_wandb's own check

    try:
        _set_api_key()
    except ValueError as err:
        raise CurveSettingsError(f"--log-to wandb: {err}; or set WANDB_MODE=offline to log "
                                 "without an account (`wandb sync` uploads later)") from None
