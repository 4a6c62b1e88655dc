"""Per-method search spaces: the paper's grids (β of Table 6, lrs of Table 4, λ of §4.1).

Files under the search-space folders: the shipped `raydaa/search_spaces/`, under the user's
own (`$RAYDAA_SEARCH_SPACES`, `--search-spaces DIR`; raydaa.config.space_folders):

    methods/<method>.yaml        setup `two_stage`: β x lr from the SFT model (paper §4.2),
                                 with a `scenarios:` block of per-scenario overrides
    single_stage/<method>.yaml   ORPO / ASFT only: `setups:` base_init, sft_init,
                                 sft_init_align_only (paper §4.1), each with its overrides

A per-scenario block replaces any key of the space (`lrs: [...]`) or extends the β grid
with `extra_betas` (Appendix A.2.2's extreme points); a scenario's own `grids.<method>`
(same keys) wins over that block. Every grid is the product of its
lists, so `grid()` (Ray Tune grid search) and `optuna_space()` (categorical over the same
values, for Ray Tune's OptunaSearch) explore exactly the same set of configurations;
`optuna_space("continuous")` searches the box the grid spans (raydaa.config.optuna_space).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raydaa.config import space_folders
from raydaa.config.grids import INITS, OVERRIDE_KEYS, SETUPS, SPACE_KEYS, same
from raydaa.config.grids import integers as _integers
from raydaa.config.grids import number as _number
from raydaa.config.grids import numbers as _numbers
from raydaa.config.loading import ConfigError, build
from raydaa.config.rules import check_finite, check_whole
from raydaa.config.scenario import Scenario, available_scenarios, load_scenario
from raydaa.core.methods import LOSS_FIELDS, METHOD_SPECS, METHODS, LossConfig

TWO_STAGE = "two_stage"
"""The paper's recommended setup: SFT first, then the alignment loss alone (β searched)."""


@dataclass(frozen=True)
class AlignConfig:
    """One point of a method's space: the loss configuration, whole, and the optimizer's."""

    loss: LossConfig
    lr: float
    epochs: int | None = None
    """Overrides the scenario's align.epochs (single-stage runs use 1 or 2)."""
    seed: int | None = None
    """Training seed (data order, anything random in the run); None: the scenario's seed.
    A seed replicate (`raydaa replicate`) sets it; it is not a CONFIG_KEY, so runs of one
    configuration at several seeds are one configuration. Evaluation always samples with
    the scenario's seed: one yardstick for every run."""

    def __post_init__(self) -> None:
        # the optimizer's fields are checked here, as the loss checks its own, so a bad
        # `--lr nan` or `--epochs 0` is refused before any run starts
        object.__setattr__(self, "lr", check_finite({"lr": self.lr}, positive=True)["lr"])
        if self.epochs is not None:
            check_whole({"epochs": self.epochs})
            if self.epochs < 1:
                raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.seed is not None:
            check_whole({"seed": self.seed})
            if self.seed < 0:  # torch.manual_seed and randperm generators take no negatives
                raise ValueError(f"seed must be >= 0, got {self.seed}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AlignConfig:
        """From a flat trial config (Tune's `param_space` point, a row, CLI arguments)."""
        epochs, seed = config.get("epochs"), config.get("seed")
        return cls(
            LossConfig.from_mapping(config),
            lr=float(config["lr"]),
            epochs=None if epochs is None else int(epochs),
            seed=None if seed is None else int(seed),
        )

    def as_dict(self) -> dict[str, Any]:
        """The flat config, with every value resolved as the loss runs it (CONFIG_KEYS)."""
        return {**self.loss.as_dict(), "lr": self.lr, "epochs": self.epochs}

    def training_seed(self, scenario_seed: int) -> int:
        """The seed the training run uses: this config's own, else the scenario's."""
        return scenario_seed if self.seed is None else self.seed


CONFIG_KEYS: tuple[str, ...] = (*LOSS_FIELDS, "lr", "epochs")
"""The keys of one point of a method's space: the loss's fields, then the optimizer's.
The training seed is not one: store rows that differ only in `seed` are replicates of one
configuration (raydaa.config.search_space.search_rows)."""


def config_identity(row: dict[str, Any]) -> tuple:
    """A hashable identity of the configuration a row or config ran (CONFIG_KEYS only):
    floats to 12 significant digits (the 1e-9 relative tolerance of
    raydaa.study.runner.same_config), None and NaN alike."""

    def norm(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(f"{value:.12g}")
        return value

    return tuple(norm(row.get(k)) for k in CONFIG_KEYS)


def search_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that stand for their configuration: each configuration's rows at its lowest
    seed (the search's own; replicates run at higher seeds). Selecting "best" over these,
    never over every seed, keeps a configuration from winning by the max of its replicates;
    seed-averaged statistics read all rows. Rows keep their order."""
    lowest: dict[tuple, int] = {}
    for row in rows:
        key, seed = config_identity(row), row.get("seed")
        seed = 0 if seed is None else seed
        lowest[key] = min(lowest.get(key, seed), seed)
    return [r for r in rows if (r.get("seed") or 0) == lowest[config_identity(r)]]

@dataclass
class MethodSpace:
    """The hyperparameter grid of one method in one setup and scenario."""

    method: str
    """One of raydaa.core.losses.METHODS."""
    betas: list[float]
    """β values (paper Table 6, plus Appendix A.2.2's extras per scenario); all > 0."""
    lrs: list[float]
    """Peak learning rates (paper Table 4: alignment {3e-7, 5e-7, 7e-7, 1e-6})."""
    lambdas: list[float] = field(default_factory=lambda: [1.0])
    """Weights λ of the alignment term (single-stage ORPO/ASFT: {0.1, 0.2, 0.5, 1.0})."""
    sft_weight: float = 0.0
    """Weight of the SFT term -log π(y_w|x): 0 two-stage, 1 single-stage (paper §2.4)."""
    gamma_beta_ratio: float | None = None
    """SimPO's γ/β (paper A.2.2: 0.5); null for every other method."""
    epochs: list[int] = field(default_factory=lambda: [1])
    """Epochs over the preference data (single-stage base-init: {1, 2}); where the YAML
    gives none, the scenario's `align.epochs` (1 without a scenario)."""
    normalization: str = "paper"
    """Length normalization of log-probs: paper (all methods, Appendix A.1), original (each
    method's own choice, Table 3), sum, mean."""
    init: str = "sft"
    """Policy and reference at the start: sft (the scenario's SFT checkpoint) or base."""
    setup: str = TWO_STAGE
    """two_stage, or a single-stage setup of paper §4.1 (base_init, sft_init, ...)."""
    scenario: str | None = None
    """The scenario whose overrides were applied; None: the method's defaults."""
    description: str = ""
    """One line on what the setup is."""
    source: str = ""
    """The YAML file the space came from."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; valid: {list(METHODS)}")
        self.betas = _numbers("betas", self.betas, positive=True)
        self.lrs = _numbers("lrs", self.lrs, positive=True)
        self.lambdas = _numbers("lambdas", self.lambdas, positive=True)
        self.epochs = _integers("epochs", self.epochs)
        self.sft_weight = _number("sft_weight", self.sft_weight)
        if self.gamma_beta_ratio is not None:
            self.gamma_beta_ratio = _number("gamma_beta_ratio", self.gamma_beta_ratio)
        if "gamma_beta_ratio" in METHOD_SPECS[self.method].extra_hparams and self.gamma_beta_ratio is None:
            raise ValueError(f"gamma_beta_ratio: {self.method} needs it (paper: 0.5)")
        # The fixed loss fields are checked by the loss configuration itself.
        LossConfig(beta=self.betas[0], lambda_=self.lambdas[0], **self.fixed())
        if self.init not in INITS:
            raise ValueError(f"init: unknown {self.init!r}; valid: {list(INITS)}")

    # -- the grid -------------------------------------------------------------------------

    @property
    def searched(self) -> dict[str, list]:
        """The values each searched key takes: {"beta": [...], "lr": [...], "lambda_": [...],
        "epochs": [...]}. The grid is their product."""
        return {"beta": self.betas, "lr": self.lrs, "lambda_": self.lambdas, "epochs": self.epochs}

    def fixed(self) -> dict[str, Any]:
        """The keys every configuration of the space shares."""
        return {
            "method": self.method,
            "sft_weight": self.sft_weight,
            "gamma_beta_ratio": self.gamma_beta_ratio,
            "normalization": self.normalization,
        }

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration, β-major: {method, beta, lr, lambda_, sft_weight,
        gamma_beta_ratio, epochs, normalization} (CONFIG_KEYS)."""
        keys, values = zip(*self.searched.items(), strict=True)
        return [{**self.fixed(), **dict(zip(keys, point, strict=True))} for point in itertools.product(*values)]

    @property
    def size(self) -> int:
        """Number of configurations: |β| x |lr| x |λ| x |epochs|."""
        return math.prod(len(v) for v in self.searched.values())

    def contains(self, config: dict[str, Any]) -> bool:
        """Whether `config` (a subset of a grid entry's keys) is a point of the grid; floats
        compare with a relative tolerance of 1e-9."""
        allowed = {**{k: [v] for k, v in self.fixed().items()}, **self.searched}
        for key, value in config.items():
            if key not in allowed:
                raise KeyError(f"{key!r} is not a search-space key; valid: {sorted(allowed)}")
            if not any(same(value, choice) for choice in allowed[key]):
                return False
        return True

    # -- Ray Tune -------------------------------------------------------------------------

    def optuna_space(self, kind: str = "grid") -> dict[str, Any]:
        """Optuna distributions for `ray.tune.search.optuna.OptunaSearch(space, ...)`.
        kind "grid": a categorical over each searched key's values, so Optuna samples from
        the grid's own set; "continuous": log-uniform β, lr (and λ where the grid has
        several) within the grid's bounds (raydaa.config.optuna_space). The fixed keys
        (`fixed()`) go into the Tuner's `param_space`, which Tune merges with every
        suggestion."""
        from raydaa.config.optuna_space import distributions

        return distributions(self.searched, kind)

    def optuna_define_by_run(self):
        """The same space as an Optuna define-by-run function: it suggests the searched keys
        and returns the fixed ones, so each suggestion is a complete grid configuration."""
        searched, fixed = self.searched, self.fixed()

        def define(trial) -> dict[str, Any]:
            for key, values in searched.items():
                trial.suggest_categorical(key, values)
            return dict(fixed)

        return define

    def tune_grid_space(self) -> dict[str, Any]:
        """A Ray Tune `param_space` that runs the whole grid (one trial per configuration)."""
        from ray import tune

        return {**self.fixed(), **{k: tune.grid_search(v) for k, v in self.searched.items()}}


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

_TWO_STAGE_FILE_KEYS = ("method", *SPACE_KEYS, "scenarios")
_SINGLE_STAGE_FILE_KEYS = ("method", "normalization", "description", "setups")
_SETUP_KEYS = (*SPACE_KEYS, "scenarios")


def available_methods(root: Path | None = None) -> list[str]:
    """Methods with a two-stage space file (`methods/<method>.yaml`) in any search-space
    folder, in METHODS order (a file named for no method comes last, and fails to load)."""
    stems = list(space_folders.listing("methods", root))
    return sorted(stems, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))


def available_setups(method: str | None = None, root: Path | None = None) -> list[str]:
    """two_stage, then the single-stage setups (of `method`, or of any method)."""
    setups: list[str] = []
    for stem, path in space_folders.listing("single_stage", root).items():
        if method is None or stem == method:
            data = _read(path)
            setups += [s for s in (data.get("setups") or {}) if s not in setups]
    return [TWO_STAGE, *setups]


def load_method_space(
    method: str,
    scenario: str | Scenario | None = None,
    setup: str = TWO_STAGE,
    root: Path | None = None,
) -> MethodSpace:
    """The search space of `method` for `scenario` in `setup`.

    scenario: a scenario name or YAML path (loaded), a loaded Scenario, or None (the
    method's defaults). Precedence: the scenario's own `grids.<method>` (single-stage:
    `grids.<method>.setups.<setup>`), then the method file's block for the scenario's name
    (`scenarios.<name>`), then the method file's defaults. `root`: one complete
    search-space folder instead of the layered ones. Errors are ConfigError naming the
    file, the key and the valid choices.
    """
    known = available_scenarios(root)
    loaded = None
    if scenario is not None:
        loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, root)
    scenario_name = None if loaded is None else loaded.name
    if setup == TWO_STAGE:
        path = space_folders.find("methods", method, root)
        if path is None:
            raise ConfigError(
                f"{space_folders.where('methods', root)}: unknown method {method!r} "
                f"(no {method}.yaml); valid: {available_methods(root)}"
            )
        data = _read(path)
        _check_keys(data, _TWO_STAGE_FILE_KEYS, str(path))
        _check_method(data, method, path)
        base = {k: v for k, v in data.items() if k != "scenarios"}
        blocks, where = data.get("scenarios"), f"{path}: scenarios"
    else:
        path = space_folders.find("single_stage", method, root)
        if path is None:
            raise ConfigError(
                f"{space_folders.where('single_stage', root)}: method {method!r} has no setup "
                f"{setup!r} (no {method}.yaml); valid setups for {method}: "
                f"{available_setups(method, root)}"
            )
        data = _read(path)
        _check_keys(data, _SINGLE_STAGE_FILE_KEYS, str(path))
        _check_method(data, method, path)
        setups = data.get("setups")
        if not isinstance(setups, dict) or not setups:
            raise ConfigError(f"{path}: setups: expected a non-empty mapping of setups")
        if setup not in setups:
            raise ConfigError(
                f"{path}: setups: unknown setup {setup!r}; valid: {[TWO_STAGE, *setups]}"
            )
        block = setups[setup]
        _check_keys(block, _SETUP_KEYS, f"{path}: setups.{setup}")
        base = {k: v for k, v in data.items() if k != "setups"}
        base.update({k: v for k, v in block.items() if k != "scenarios"})
        blocks, where = block.get("scenarios"), f"{path}: setups.{setup}.scenarios"

    blocks = {} if blocks is None else blocks
    if not isinstance(blocks, dict):
        raise ConfigError(f"{where}: expected a mapping of scenario name -> overrides")
    for name, override in blocks.items():
        if name not in known:
            raise ConfigError(f"{where}: unknown scenario {name!r}; valid: {known}")
        _check_keys(override, OVERRIDE_KEYS, f"{where}.{name}")

    merged = dict(base)
    label = str(path)
    if scenario_name in blocks:
        _apply(merged, blocks[scenario_name], f"{where}.{scenario_name}")
        label = f"{path} (scenarios.{scenario_name})"
    own = None if loaded is None else _own_grid(loaded, method, setup, root)
    if own is not None:
        key, grid = own
        _apply(merged, grid, f"scenario {scenario_name!r}: {key}")
        label = f"{label} + scenario {scenario_name!r} ({key})"
    if "epochs" not in merged and loaded is not None:
        # one source for a two-stage run's length: the scenario's align recipe (a grid's
        # own `epochs: [1]` once silently overrode tiny's `align.epochs: 2`)
        merged["epochs"] = [loaded.align.epochs]
    merged.update(setup=setup, scenario=scenario_name, source=str(path))
    return build(MethodSpace, merged, label)


def load_all_spaces(
    scenario: str | Scenario | None = None, root: Path | None = None
) -> dict[tuple[str, str], MethodSpace]:
    """Every (method, setup) space for `scenario`."""
    spaces = {}
    for method in available_methods(root):
        for setup in available_setups(method, root):
            spaces[method, setup] = load_method_space(method, scenario, setup, root)
    return spaces


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _own_grid(
    scenario: Scenario, method: str, setup: str, root: Path | None
) -> tuple[str, dict[str, Any]] | None:
    """The scenario's own grid for (method, setup) and its key (`grids.dpo`,
    `grids.orpo.setups.base_init`), or None; a setup the method's files lack is refused."""
    block = scenario.grids.get(method)
    if block is None:
        return None
    setups = block.get(SETUPS) or {}
    valid = available_setups(method, root)[1:]
    unknown = sorted(set(setups) - set(valid))
    if unknown:
        raise ConfigError(
            f"scenario {scenario.name!r}: grids.{method}.{SETUPS}: unknown setup(s) {unknown}; "
            f"valid single-stage setups of {method}: {valid}"
        )
    if setup == TWO_STAGE:
        grid = {k: v for k, v in block.items() if k != SETUPS}
        return (f"grids.{method}", grid) if grid else None
    if setup in setups:
        return f"grids.{method}.{SETUPS}.{setup}", setups[setup]
    return None


def _apply(merged: dict[str, Any], override: dict[str, Any], where: str) -> None:
    """An override block into `merged`: its keys replace, its `extra_betas` extend β."""
    override = dict(override)
    extra = override.pop("extra_betas", None)
    merged.update(override)
    if extra is not None:
        if not isinstance(extra, list) or not extra:
            raise ConfigError(f"{where}: extra_betas: expected a non-empty list")
        merged["betas"] = [*(merged.get("betas") or []), *extra]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _check_keys(data: Any, valid: tuple[str, ...], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")


def _check_method(data: dict[str, Any], method: str, path: Path) -> None:
    if data.get("method") not in METHODS:
        raise ConfigError(
            f"{path}: method: unknown {data.get('method')!r}; valid: {list(METHODS)}"
        )
    if data["method"] != method:
        raise ConfigError(f"{path}: method: {data['method']!r} in a file named for {method!r}")
