"""Per-method search spaces: the paper's grids (β of Table 6, lrs of Table 4, λ of §4.1).

Files under `search_spaces/` (or `$RAYDAA_SEARCH_SPACES`):

    methods/<method>.yaml        setup `two_stage`: β x lr from the SFT model (paper §4.2),
                                 with a `scenarios:` block of per-scenario overrides
    single_stage/<method>.yaml   ORPO / ASFT only: `setups:` base_init, sft_init,
                                 sft_init_align_only (paper §4.1), each with its overrides

A per-scenario block replaces any key of the space (`lrs: [...]`) or extends the β grid
with `extra_betas` (Appendix A.2.2's extreme points). Every grid is the product of its
lists, so `grid()` (Ray Tune grid search) and `optuna_space()` (categorical over the same
values, for Ray Tune's OptunaSearch) explore exactly the same set of configurations.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raydaa.config.loading import ConfigError, build
from raydaa.config.scenario import Scenario, available_scenarios, load_scenario, search_spaces_dir
from raydaa.core.methods import LOSS_FIELDS, METHOD_SPECS, METHODS, LossConfig

TWO_STAGE = "two_stage"
"""The paper's recommended setup: SFT first, then the alignment loss alone (β searched)."""
INITS = ("sft", "base")


@dataclass(frozen=True)
class AlignConfig:
    """One point of a method's space: the loss configuration, whole, and the optimizer's."""

    loss: LossConfig
    lr: float
    epochs: int | None = None
    """Overrides the scenario's align.epochs (single-stage runs use 1 or 2)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AlignConfig:
        """From a flat trial config (Tune's `param_space` point, a row, CLI arguments)."""
        epochs = config.get("epochs")
        return cls(
            LossConfig.from_mapping(config),
            lr=float(config["lr"]),
            epochs=None if epochs is None else int(epochs),
        )

    def as_dict(self) -> dict[str, Any]:
        """The flat config, with every value resolved as the loss runs it (CONFIG_KEYS)."""
        return {**self.loss.as_dict(), "lr": self.lr, "epochs": self.epochs}


CONFIG_KEYS: tuple[str, ...] = (*LOSS_FIELDS, "lr", "epochs")
"""The keys of one point of a method's space: the loss's fields, then the optimizer's."""

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
            if not any(_same(value, choice) for choice in allowed[key]):
                return False
        return True

    # -- Ray Tune -------------------------------------------------------------------------

    def optuna_space(self) -> dict[str, Any]:
        """Optuna distributions for `ray.tune.search.optuna.OptunaSearch(space, ...)`: a
        categorical over each searched key's values, so Optuna samples from the grid's own
        set. The fixed keys (`fixed()`) go into the Tuner's `param_space`, which Tune
        merges with every suggestion. A dict space (unlike define-by-run) also accepts
        `points_to_evaluate` / `evaluated_rewards` for warm starts."""
        from optuna.distributions import CategoricalDistribution

        return {key: CategoricalDistribution(values) for key, values in self.searched.items()}

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

_SPACE_KEYS = ("betas", "lrs", "lambdas", "sft_weight", "gamma_beta_ratio", "epochs",
               "normalization", "init", "description")
"""Keys a setup or a per-scenario block may set."""
_OVERRIDE_KEYS = (*_SPACE_KEYS, "extra_betas")
_TWO_STAGE_FILE_KEYS = ("method", *_SPACE_KEYS, "scenarios")
_SINGLE_STAGE_FILE_KEYS = ("method", "normalization", "description", "setups")
_SETUP_KEYS = (*_SPACE_KEYS, "scenarios")


def available_methods(root: Path | None = None) -> list[str]:
    """Methods with a two-stage space file (`methods/<method>.yaml`), in METHODS order
    (a file named for no method comes last, and fails to load)."""
    stems = [p.stem for p in _dir(root, "methods").glob("*.yaml")]
    return sorted(stems, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))


def available_setups(method: str | None = None, root: Path | None = None) -> list[str]:
    """two_stage, then the single-stage setups (of `method`, or of any method)."""
    files = sorted(_dir(root, "single_stage").glob("*.yaml"))
    setups: list[str] = []
    for path in files:
        if method is None or path.stem == method:
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

    scenario: a scenario name under `search_spaces/scenarios/` (its override block applies),
    a loaded Scenario (its name's block applies if there is one: a scenario of one's own
    gets the method's defaults), or None (the defaults). Errors are ConfigError naming the
    file, the key and the valid choices.
    """
    root = Path(root) if root else search_spaces_dir()
    known = available_scenarios(root)
    if isinstance(scenario, Scenario):
        scenario_name = scenario.name
    else:
        scenario_name = scenario
        if scenario is not None and scenario not in known:
            raise ConfigError(
                f"{root / 'scenarios'}: unknown scenario {scenario!r}; valid: {known}"
            )
    if setup == TWO_STAGE:
        path = root / "methods" / f"{method}.yaml"
        if not path.exists():
            raise ConfigError(
                f"{root / 'methods'}: unknown method {method!r} (no {method}.yaml); "
                f"valid: {available_methods(root)}"
            )
        data = _read(path)
        _check_keys(data, _TWO_STAGE_FILE_KEYS, str(path))
        _check_method(data, method, path)
        base = {k: v for k, v in data.items() if k != "scenarios"}
        blocks, where = data.get("scenarios"), f"{path}: scenarios"
    else:
        path = root / "single_stage" / f"{method}.yaml"
        if not path.exists():
            raise ConfigError(
                f"{root / 'single_stage'}: method {method!r} has no setup {setup!r} "
                f"(no {method}.yaml); valid setups for {method}: {available_setups(method, root)}"
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
        _check_keys(override, _OVERRIDE_KEYS, f"{where}.{name}")

    merged = dict(base)
    label = str(path)
    if scenario_name in blocks:
        override = dict(blocks[scenario_name])
        extra = override.pop("extra_betas", None)
        merged.update(override)
        if extra is not None:
            if not isinstance(extra, list) or not extra:
                raise ConfigError(f"{where}.{scenario_name}: extra_betas: expected a non-empty list")
            merged["betas"] = [*(merged.get("betas") or []), *extra]
        label = f"{path} (scenarios.{scenario_name})"
    if "epochs" not in merged and scenario is not None:
        # one source for a two-stage run's length: the scenario's align recipe (a grid's
        # own `epochs: [1]` once silently overrode tiny's `align.epochs: 2`)
        loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, root)
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


def _dir(root: Path | None, sub: str) -> Path:
    return (Path(root) if root else search_spaces_dir()) / sub


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


def _number(name: str, value: Any) -> float:
    """A finite float; numeric strings are accepted (YAML 1.1 reads `3e-7` as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number


def _numbers(name: str, values: Any, *, positive: bool) -> list[float]:
    """A sorted, non-empty list of distinct finite floats (> 0 when `positive`)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name}: expected a non-empty list, got {values!r}")
    numbers = [_number(name, v) for v in values]
    if positive and any(v <= 0 for v in numbers):
        raise ValueError(f"{name}: every value must be > 0, got {numbers}")
    _no_duplicates(name, numbers)
    return sorted(numbers)


def _integers(name: str, values: Any) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name}: expected a non-empty list, got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name}: expected integers >= 1, got {list(values)}")
    _no_duplicates(name, values)
    return sorted(values)


def _no_duplicates(name: str, values: list) -> None:
    repeated = sorted({v for v in values if sum(_same(v, w) for w in values) > 1})
    if repeated:
        raise ValueError(f"{name}: repeated value(s) {repeated}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b
