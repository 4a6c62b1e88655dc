"""How many trials a sweep runs at once: from what the cluster holds, or can grow to.

Free resources are the wrong measure: just after stage 1 (or while an autoscaler's nodes
are still starting) they undercount, and the quick start then ran one trial at a time on a
machine that holds two. So the count comes from the cluster's total resources, or, on a
cluster started with `ray up` (whose head keeps the autoscaler's config at
~/ray_bootstrap_config.yaml), from the largest size its node types can scale to.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where `ray up` leaves the cluster's config on its head node."""


def trial_request(resources) -> dict[str, float]:
    """What one trial's training holds: its Ray Train workers (the driver asks for no
    CPU), or its driver when it trains its one worker itself (raydaa/train/in_process.py)."""
    request = {"CPU": float(resources.num_workers * resources.cpus_per_worker)}
    if resources.use_gpu:
        request["GPU"] = float(resources.num_workers)
    return request


def autoscaler_capacity(path: str | Path = AUTOSCALER_CONFIG) -> dict[str, float] | None:
    """CPU / GPU totals of the autoscaling cluster at its largest (the head plus every node
    type at its max_workers, capped by the global max_workers); None without a config or
    when a node type leaves its resources to auto-detection (then it is not knowable here)."""
    file = Path(os.path.expanduser(str(path)))
    if not file.is_file():
        return None
    config = yaml.safe_load(file.read_text()) or {}
    types: dict[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    total = {"CPU": 0.0, "GPU": 0.0}
    workers_left = config.get("max_workers", math.inf)
    if any(node.get("resources") is None for node in types.values()):
        return None

    def largest_first(item: tuple[str, Any]) -> tuple:
        name, node = item
        size = node["resources"]
        return (name != head, -float(size.get("GPU", 0)), -float(size.get("CPU", 0)))

    # the head, then worker types largest first: the global cap trims the smallest
    for name, node in sorted(types.items(), key=largest_first):
        resources = node["resources"]
        count = 1 if name == head else min(node.get("max_workers", 0), workers_left)
        if name != head:
            workers_left -= count
        for key in total:
            total[key] += float(resources.get(key, 0)) * count
    return total


def fits(capacity: dict[str, float], request: dict[str, float]) -> int:
    """Whole trials of `request` that `capacity` holds at once (at least 1)."""
    counts = [int(capacity.get(key, 0.0) // need) for key, need in request.items() if need > 0]
    return max(1, min(counts, default=1))


def concurrency(scenario, autoscaler_config: str | Path = AUTOSCALER_CONFIG) -> int:
    """Trials at once: what the cluster holds now or, on an autoscaling cluster, can grow
    to, whichever is more; at least 1."""
    import ray

    total = {k: float(v) for k, v in ray.cluster_resources().items()}
    grown = autoscaler_capacity(autoscaler_config)
    if grown is not None:
        total = {key: max(total.get(key, 0.0), grown.get(key, 0.0)) for key in ("CPU", "GPU")}
    return fits(total, trial_request(scenario.resources))
