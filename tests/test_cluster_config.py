"""cluster.yaml passes the checks `ray up` runs before it touches AWS: Ray's prepare_config
(merge with the AWS defaults, per-type min/max workers) then validate_config (Ray's JSON
schema and cross-field rules). No AWS call: the provider bootstrap that follows in `ray up`
needs credentials."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(yaml.safe_load(CLUSTER_YAML.read_text()))
    validate_config(prepared)  # raises jsonschema.ValidationError / ValueError if invalid
    return prepared


def test_head_has_no_gpu_and_workers_have_eight(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["max_workers"] == 0  # filled in by prepare_config: the head is one node
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    worker = workers[0]
    assert worker["resources"]["GPU"] == 8 and worker["resources"]["CPU"] == 96
    assert worker["node_config"]["InstanceType"] == "p4de.24xlarge"  # 8x A100 80GB
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]


def test_image_pins_the_installed_ray_and_python(config):
    """`ray up` needs the same Ray on laptop and cluster, the same Python minor for jobs."""
    import sys

    import ray

    tag = f"{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    assert config["docker"]["image"] == f"rayproject/ray:{tag}-cu128"
    assert config["docker"]["head_image"] == f"rayproject/ray:{tag}-cpu"
    pyproject = (CLUSTER_YAML.parent / "pyproject.toml").read_text()
    assert '"ray[tune,train,default]>=2.50,<3"' in pyproject
    assert Version("2.50") <= Version(ray.__version__) < Version("3")


def test_every_node_installs_raydaa_and_exports_metrics(config):
    assert any("raydaa" in c and "pip install" in c for c in config["setup_commands"])
    assert "/tmp/raydaa-dist" in config["file_mounts"]
    for start in ("head_start_ray_commands", "worker_start_ray_commands"):
        command = " ".join(config[start])
        assert "--metrics-export-port=8080" in command
        assert "RAY_TRAIN_ENABLE_STATE_TRACKING=1" in command


def test_nodes_install_the_wheel_built_from_the_checkout(config):
    """The setup command is a plain `pip install` of the wheel that the header's build
    command writes to ./dist and file_mounts copies: never an editable or checkout install."""
    import fnmatch

    from raydaa import __version__

    wheel = f"raydaa-{__version__}-py3-none-any.whl"  # the name tests/test_packaging.py builds
    assert "pip wheel --no-deps -w dist ." in CLUSTER_YAML.read_text()
    assert config["file_mounts"]["/tmp/raydaa-dist"] == "./dist"
    (install,) = [c for c in config["setup_commands"] if "raydaa" in c]
    *command, target = install.split()
    assert command[:2] == ["pip", "install"] and not {"-e", "--editable"} & set(command)
    assert fnmatch.fnmatch(f"/tmp/raydaa-dist/{wheel}", target)


def test_every_field_has_a_comment():
    """Every key up to the node types' fields (indent <= 4) has a comment line above it."""
    lines = CLUSTER_YAML.read_text().splitlines()
    keys = [
        (i, m.group(1))
        for i, line in enumerate(lines)
        if (m := re.match(r"^ {0,4}([A-Za-z_][\w-]*):", line))
    ]
    assert len(keys) > 30
    for i, key in keys:
        assert lines[i - 1].strip().startswith("#"), f"cluster.yaml:{i + 1}: {key!r} has no comment"
