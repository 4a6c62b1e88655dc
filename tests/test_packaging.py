"""The wheel carries the shipped search spaces, and an installed (non-editable) raydaa run
from another directory finds them; user folders layer over them (flag and environment),
for this process and for Ray workers."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

from raydaa.config.loading import ConfigError
from raydaa.config.scenario import available_scenarios, load_scenario, search_spaces_dir
from raydaa.config.search_space import available_methods, available_setups, load_method_space
from raydaa.config.space_folders import ENV, shipped_dir

CHECKOUT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    p.relative_to(CHECKOUT).as_posix()
    for p in (CHECKOUT / "raydaa" / "search_spaces").rglob("*.yaml")
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points at the checkout or a user folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", ENV)}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (the build leaves its build/ there)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, src / name)
    shutil.copytree(CHECKOUT / "raydaa", src / "raydaa",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    # no build isolation: the build backend comes from this venv (no network here)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist)],
        check=True, env=clean_env(), cwd=dist,
    )
    (built,) = dist.glob("raydaa-*.whl")
    return built


def test_the_wheel_carries_every_shipped_yaml(wheel):
    from raydaa import __version__

    assert wheel.name == f"raydaa-{__version__}-py3-none-any.whl"  # cluster.yaml installs it
    names = zipfile.ZipFile(wheel).namelist()
    assert len(SHIPPED) == 15
    assert sorted(n for n in names if n.startswith("raydaa/search_spaces/")) == SHIPPED


def test_an_installed_wheel_run_elsewhere_finds_the_search_spaces(wheel, tmp_path):
    # A fresh venv that sees this venv's packages through a .pth line (installing torch,
    # Ray, ... again would need the network), with raydaa itself installed from the wheel.
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # a plain path line: this venv's own .pth files (the editable raydaa) are not run
    Path(site, "current_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, env=clean_env(),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = textwrap.dedent(
        """
        import raydaa
        from raydaa.config.scenario import available_scenarios
        from raydaa.config.search_space import available_methods, load_method_space
        print(raydaa.__file__)
        print(available_scenarios())
        print(available_methods())
        print(load_method_space("dpo", "tiny").betas)
        """
    )
    out = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True,
        cwd=elsewhere, env=clean_env(),
    ).stdout.splitlines()
    installed = Path(out[0]).resolve()
    assert installed.is_relative_to(Path(site).resolve()), installed
    assert not installed.is_relative_to(CHECKOUT)
    assert out[1] == str(["llama31-8b-uf", "llama32-3b-tldr", "llama32-3b-uf", "rehearsal", "tiny"])
    assert out[2] == str(["dpo", "ipo", "simpo", "nca", "cal_dpo", "apo_zero", "orpo", "asft"])
    assert out[3] == str([0.01, 0.1, 0.5, 1.0, 2.0, 5.0])  # tiny's own β grid
    # the installed console script: an unknown scenario lists the shipped ones
    command = subprocess.run(
        [str(fresh / "bin" / "raydaa"), "search", "--method", "dpo", "--scenario", "nope"],
        capture_output=True, text=True, cwd=elsewhere, env=clean_env(),
    )
    assert command.returncode == 2
    assert str(Path(site).resolve() / "raydaa" / "search_spaces" / "scenarios") in command.stderr
    assert "valid: ['llama31-8b-uf', 'llama32-3b-tldr', 'llama32-3b-uf', 'rehearsal', 'tiny']" in command.stderr


# ---------------------------------------------------------------------------------------
# A user's folder over the shipped one
# ---------------------------------------------------------------------------------------


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """scenarios/tiny.yaml (replaces the shipped one: seed 7), scenarios/mine.yaml (new),
    single_stage/simpo.yaml (new: a single-stage SimPO setup)."""
    folder = tmp_path / "my_spaces"
    (folder / "scenarios").mkdir(parents=True)
    (folder / "single_stage").mkdir()
    tiny = yaml.safe_load((shipped_dir() / "scenarios" / "tiny.yaml").read_text())
    (folder / "scenarios" / "tiny.yaml").write_text(yaml.safe_dump({**tiny, "seed": 7}))
    (folder / "scenarios" / "mine.yaml").write_text(yaml.safe_dump({**tiny, "name": "mine"}))
    simpo = {
        "method": "simpo",
        "setups": {"with_sft": {"init": "sft", "betas": [2.0], "lrs": [1.0e-4],
                                "sft_weight": 1.0, "gamma_beta_ratio": 0.5}},
    }
    (folder / "single_stage" / "simpo.yaml").write_text(yaml.safe_dump(simpo))
    return folder


def assert_layered(folder: Path) -> None:
    """What this process sees with `folder` over the shipped search spaces."""
    assert available_scenarios() == ["llama31-8b-uf", "llama32-3b-tldr", "llama32-3b-uf",
                                     "mine", "rehearsal", "tiny"]
    assert load_scenario("tiny").seed == 7 and load_scenario("mine").name == "mine"
    assert load_scenario("llama31-8b-uf").model.hf_id  # a shipped file still loads
    assert available_methods() == ["dpo", "ipo", "simpo", "nca", "cal_dpo", "apo_zero",
                                   "orpo", "asft"]
    assert available_setups("simpo") == ["two_stage", "with_sft"]
    assert available_setups("orpo") == ["two_stage", "base_init", "sft_init",
                                        "sft_init_align_only"]
    space = load_method_space("simpo", "mine", "with_sft")
    assert (space.betas, space.sft_weight, space.source) == (
        [2.0], 1.0, str(folder / "single_stage" / "simpo.yaml"))
    with pytest.raises(ConfigError) as err:
        load_scenario("nope")
    assert "'mine'" in str(err.value) and "'llama32-3b-uf'" in str(err.value)
    assert str(folder / "scenarios") in str(err.value)


def test_the_environment_layers_a_folder_over_the_shipped_one(user_folder, monkeypatch):
    monkeypatch.setenv(ENV, "")  # no user folder (recorded, so restored after the test)
    assert "mine" not in available_scenarios() and load_scenario("tiny").seed == 0
    monkeypatch.setenv(ENV, str(user_folder))
    assert_layered(user_folder)
    assert search_spaces_dir() == shipped_dir()  # the shipped folder itself is unchanged


def test_several_folders_the_first_wins(user_folder, tmp_path, monkeypatch):
    other = tmp_path / "other" / "scenarios"
    other.mkdir(parents=True)
    tiny = yaml.safe_load((user_folder / "scenarios" / "tiny.yaml").read_text())
    (other / "tiny.yaml").write_text(yaml.safe_dump({**tiny, "seed": 9}))
    monkeypatch.setenv(ENV, os.pathsep.join([str(other.parent), str(user_folder)]))
    assert load_scenario("tiny").seed == 9 and "mine" in available_scenarios()
    monkeypatch.setenv(ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=f"{ENV}.*missing.*not a directory"):
        available_scenarios()


def test_the_flag_layers_a_folder_for_the_command(user_folder, monkeypatch):
    from raydaa.cli.options import add_location_options

    monkeypatch.setenv(ENV, "")  # recorded, so the flag's change is undone after the test
    parser = argparse.ArgumentParser()
    add_location_options(parser)
    args = parser.parse_args(["--scenario", "mine", "--search-spaces", str(user_folder)])
    assert args.search_spaces == [str(user_folder)]
    assert os.environ[ENV] == str(user_folder.resolve())
    assert_layered(user_folder)


def test_the_flag_on_the_command_line(user_folder, tmp_path):
    """`raydaa search --search-spaces DIR` finds the folder's scenario and method file (the
    error comes from the setup, named in the folder's file), lists the union for an
    unknown scenario; a missing folder is a usage error naming it; every command that
    reads scenarios or spaces has the flag."""

    def raydaa(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raydaa.cli", *args], capture_output=True,
                              text=True, env=clean_env(), cwd=tmp_path)

    flag = ["--search-spaces", str(user_folder)]
    found = raydaa("search", "--method", "simpo", "--scenario", "mine", "--setup", "nope", *flag)
    assert found.returncode == 2
    assert str(user_folder / "single_stage" / "simpo.yaml") in found.stderr
    assert "unknown setup 'nope'; valid: ['two_stage', 'with_sft']" in found.stderr
    unknown = raydaa("search", "--method", "dpo", "--scenario", "nope", *flag)
    assert unknown.returncode == 2
    assert "unknown scenario 'nope'" in unknown.stderr and "'mine'" in unknown.stderr
    without = raydaa("search", "--method", "dpo", "--scenario", "mine")
    assert without.returncode == 2 and "unknown scenario 'mine'" in without.stderr
    missing = raydaa("report", "--search-spaces", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "nowhere: not a directory" in missing.stderr
    for command in (["search"], ["sft"], ["align"], ["data", "check"], ["study"], ["report"],
                    ["benchmark"]):
        assert "--search-spaces DIR" in raydaa(*command, "--help").stdout, command


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_see_the_flags_folders(user_folder, tmp_path):
    """The flag sets the environment before Ray starts, so a task on a worker lists the
    same scenarios as the command."""
    probe = textwrap.dedent(
        f"""
        import ray
        from raydaa.cli.options import add_location_options
        import argparse
        parser = argparse.ArgumentParser()
        add_location_options(parser)
        parser.parse_args(["--search-spaces", {str(user_folder)!r}])
        from raydaa.io.ray_connection import connect_ray
        connect_ray(None)

        @ray.remote(num_cpus=0)
        def listed():
            from raydaa.config.scenario import available_scenarios, load_scenario
            return available_scenarios(), load_scenario("tiny").seed

        print(ray.get(listed.remote(), timeout=120))
        ray.shutdown()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
        env=clean_env(), cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = (["llama31-8b-uf", "llama32-3b-tldr", "llama32-3b-uf", "mine", "rehearsal", "tiny"], 7)
    assert out.stdout.strip().splitlines()[-1] == str(expected)
