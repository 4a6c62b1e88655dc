"""Trials at once: from the cluster's total resources, or what `ray up`'s autoscaler config
says the cluster can grow to, never from what happens to be free at the sweep's start."""

from pathlib import Path

import pytest
import ray
import yaml

from raydaa.config.scenario import load_scenario
from raydaa.sweep.capacity import autoscaler_capacity, concurrency, fits, trial_request

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_the_shipped_cluster_grows_to_eight_8b_trials():
    """cluster.yaml: a 0-resource head and up to 8 nodes of 96 CPUs / 8 GPUs; an 8B trial
    asks 8 workers of 1 GPU and 4 CPUs: GPUs bind, 64 // 8 = 8 trials."""
    grown = autoscaler_capacity(CLUSTER_YAML)
    assert grown == {"CPU": 8 * 96.0, "GPU": 8 * 8.0}
    request = trial_request(load_scenario("llama31-8b-uf").resources)
    assert request == {"CPU": 32.0, "GPU": 8.0}
    assert fits(grown, request) == 8


def test_the_global_max_workers_caps_the_smallest_types(tmp_path):
    config = {
        "max_workers": 3,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 4}, "max_workers": 0},
            "small": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 5},
            "big": {"resources": {"CPU": 32, "GPU": 4}, "max_workers": 2},
        },
    }
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(config))
    # head 4 CPUs + 2 big (64 CPUs, 8 GPUs) + the 1 small the cap leaves (8 CPUs, 1 GPU)
    assert autoscaler_capacity(path) == {"CPU": 76.0, "GPU": 9.0}


def test_auto_detected_resources_or_no_config_give_no_capacity(tmp_path):
    assert autoscaler_capacity(tmp_path / "absent.yaml") is None
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump({"available_node_types": {"gpu": {"max_workers": 2}}}))
    assert autoscaler_capacity(path) is None


def test_fits_is_at_least_one_and_takes_the_binding_resource():
    assert fits({"CPU": 2.0}, {"CPU": 1.0}) == 2
    assert fits({"CPU": 100.0, "GPU": 3.0}, {"CPU": 4.0, "GPU": 2.0}) == 1
    assert fits({"CPU": 1.0, "GPU": 0.0}, {"CPU": 4.0, "GPU": 8.0}) == 1


@pytest.mark.ray
def test_tiny_runs_two_trials_on_two_cpus_while_one_is_still_held(ray_cluster, tmp_path):
    """The quick start's race: just after stage 1 its CPU is not yet released. Counting
    what is free gave 1; the cluster holds 2 one-CPU tiny trials."""

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    try:
        assert ray.available_resources().get("CPU", 0) <= 1
        no_autoscaler = tmp_path / "absent.yaml"
        assert concurrency(load_scenario("tiny"), autoscaler_config=no_autoscaler) == 2
    finally:
        ray.kill(holder)
