"""Shared fixtures: one local Ray cluster per test module that needs one."""

import pytest
import ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray, tuned for short test runs, shut down after the module."""
    with pytest.MonkeyPatch.context() as mp:
        # Propagated by Ray Train V2 to its controller: poll workers every 0.25 s instead
        # of 2 s (each run's end waits for a poll); no preemption watcher / metrics
        # actors on a one-node test cluster.
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        mp.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        mp.setenv("RAY_TRAIN_METRICS_ENABLED", "0")
        # address="local": always a fresh cluster, never one that happens to be running here
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()
