"""Every value a user types is checked against its domain before any compute: a bad flag or
scenario value ends the command with argparse's error (exit 2, the flag or key named)
before Ray starts. The `ray_started` spy replaces the commands' Ray connection, so a value
that slipped through would be seen reaching it (the good-value cases prove the spy fires)."""

import json
import math
import subprocess
import sys

import pytest
import ray
import yaml

import raydaa.cli.stages as stages
from raydaa.cli import main
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario
from raydaa.config.search_space import AlignConfig
from raydaa.core.methods import LossConfig


class RayStarted(Exception):
    """Raised by the spy in place of connecting to Ray."""


@pytest.fixture
def ray_started(monkeypatch):
    calls = []

    def spy(address=None):
        calls.append(address)
        raise RayStarted

    monkeypatch.setattr(stages, "connect_ray", spy)
    return calls


@pytest.fixture
def results(tmp_path):
    """A results folder where tiny has a registered reference, so `align` with good values
    goes on to start Ray."""
    root = tmp_path / "results"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "reference.json").write_text(json.dumps({"path": str(tmp_path / "ref")}))
    return str(root)


def run(argv, capsys):
    """(exit code, stderr) of `raydaa <argv>` in this process."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--beta", "0", "--lr", "1e-6"], "argument --beta: must be a finite number > 0, got '0'"),
        (["--beta", "-1", "--lr", "1e-6"], "argument --beta: must be a finite number > 0, got '-1'"),
        (["--beta", "nan", "--lr", "1e-6"], "argument --beta"),
        (["--beta", "0.1", "--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
        (["--beta", "0.1", "--lr", "inf"], "argument --lr"),
        (["--beta", "0.1", "--lr", "-1e-6"], "argument --lr"),
        (["--beta", "0.1", "--lr", "1e-6", "--lambda", "-1"], "argument --lambda: must be a finite number > 0"),
        (["--beta", "0.1", "--lr", "1e-6", "--sft-weight", "nan"], "argument --sft-weight"),
        (["--beta", "0.1", "--lr", "1e-6", "--epochs", "0"], "argument --epochs: must be >= 1"),
        (["--beta", "0.1", "--lr", "1e-6", "--max-steps", "-2"], "argument --max-steps: must be >= 1"),
        (["--beta", "x", "--lr", "1e-6"], "argument --beta: expected a number, got 'x'"),
    ],
)
def test_a_bad_align_flag_fails_fast_naming_it(flags, named, results, ray_started, capsys):
    code, err = run(["align", "--method", "dpo", *flags, "--results", results], capsys)
    assert code == 2 and named in err
    assert ray_started == [] and not ray.is_initialized()


def test_simpo_ratio_must_be_finite(results, ray_started, capsys):
    flags = ["--beta", "1", "--lr", "1e-6", "--gamma-beta-ratio", "inf"]
    code, err = run(["align", "--method", "simpo", *flags, "--results", results], capsys)
    assert code == 2 and "argument --gamma-beta-ratio: must be a finite number >= 0" in err
    assert ray_started == []


def test_good_align_flags_reach_ray(results, ray_started):
    """The control: with good values the command goes on to start Ray (the spy)."""
    with pytest.raises(RayStarted):
        main(["align", "--method", "dpo", "--beta", "0.1", "--lr", "1e-6", "--results", results])
    assert ray_started == [None]


@pytest.mark.parametrize("fraction", ["nan", "0", "1.5", "-0.2"])
def test_a_bad_sft_fraction_fails_fast(fraction, results, ray_started, capsys):
    code, err = run(["sft", "--fraction", fraction, "--results", results], capsys)
    assert code == 2 and f"argument --fraction: must be in [0.01, 1], got '{fraction}'" in err
    assert ray_started == [] and not ray.is_initialized()


def test_the_exit_code_from_the_shell():
    out = subprocess.run(
        [sys.executable, "-m", "raydaa.cli", "align", "--method", "dpo", "--beta", "0", "--lr", "1e-6"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "argument --beta" in out.stderr
    assert "Ray" not in out.stdout + out.stderr.split("error:")[0]


# -- the scenario YAML's numbers --------------------------------------------------------

BAD_SCENARIO_VALUES = [
    ("sft", "lr", math.nan, "lr must be a finite number > 0"),
    ("sft", "lr", math.inf, "lr must be a finite number > 0"),
    ("sft", "grad_clip", math.inf, "grad_clip must be a finite number > 0"),
    ("sft", "warmup_ratio", math.nan, "warmup_ratio must be a finite number"),
    ("sft", "adam_betas", [0.9, math.nan], "adam_betas must be a finite number"),
    ("align", "epochs", 1.5, "epochs must be a whole number"),
    ("align", "micro_batch_size", math.nan, "micro_batch_size must be a whole number"),
    ("resources", "zero_stage", 2.0, "zero_stage must be a whole number"),
    ("resources", "num_workers", True, "num_workers must be a whole number"),
    ("resources", "use_gpu", "no", "use_gpu must be true or false"),
    ("resources", "checkpoint_every", math.nan, "checkpoint_every must be a whole number"),
    ("watchdog", "stall_timeout_s", math.inf, "stall_timeout_s must be a finite number > 0"),
    ("watchdog", "startup_timeout_s", math.nan, "a finite number > 0"),
    ("generation", "temperature", math.nan, "temperature must be a finite number"),
    ("generation", "max_new_tokens", math.nan, "max_new_tokens must be a whole number"),
    (None, "max_length", math.nan, "max_length must be a whole number"),
]


def tiny_with(tmp_path, section, key, value):
    data = yaml.safe_load(open(load_scenario_path("tiny")).read())
    (data[section] if section else data)[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load_scenario_path(name):
    from raydaa.config.scenario import search_spaces_dir

    return search_spaces_dir() / "scenarios" / f"{name}.yaml"


@pytest.mark.parametrize("section, key, value, message", BAD_SCENARIO_VALUES)
def test_a_bad_scenario_number_is_refused_naming_file_and_key(tmp_path, section, key, value, message):
    path = tiny_with(tmp_path, section, key, value)
    with pytest.raises(ConfigError) as err:
        load_scenario(str(path))
    assert str(path) in str(err.value) and message in str(err.value)
    if section:
        assert f".{section}" in str(err.value)


def test_a_bad_scenario_stops_sft_before_ray(tmp_path, results, ray_started, capsys):
    path = tiny_with(tmp_path, "sft", "lr", math.nan)
    code, err = run(["sft", "--scenario", str(path), "--results", results], capsys)
    assert code == 2 and "lr must be a finite number > 0" in err
    assert ray_started == [] and not ray.is_initialized()


def test_numeric_strings_still_load(tmp_path):
    """YAML 1.1 reads `3e-5` (no dot) as a string; it stays a valid learning rate."""
    path = tiny_with(tmp_path, "sft", "lr", "3e-5")
    assert load_scenario(str(path)).sft.lr == 3e-5


def test_the_loss_and_align_configs_check_their_own_numbers():
    with pytest.raises(ValueError, match="gamma_beta_ratio must be a finite number >= 0"):
        LossConfig("simpo", 1.0, gamma_beta_ratio=math.inf)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        AlignConfig.from_config({"method": "dpo", "beta": 0.1, "lr": math.nan})
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        AlignConfig.from_config({"method": "dpo", "beta": 0.1, "lr": 1e-6, "epochs": 0})
