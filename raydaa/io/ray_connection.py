"""The Ray connection every command that runs trials opens."""

from __future__ import annotations

import os


def connect_ray(address: str | None) -> str | None:
    """Join `--address` / $RAY_ADDRESS, or start a local Ray; print and return the
    dashboard URL (None when the dashboard is not running)."""
    import ray

    if ray.is_initialized():
        return None
    env_vars = {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}
    if os.environ.get("RAYDAA_SEARCH_SPACES"):
        # the user's search-space folders (--search-spaces sets it) for workers on any node
        env_vars["RAYDAA_SEARCH_SPACES"] = os.environ["RAYDAA_SEARCH_SPACES"]
    context = ray.init(
        # "local": a fresh Ray, never silently one that happens to run on this machine
        # (on a cluster's head: --address auto, or RAY_ADDRESS as `ray job submit` sets it)
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        log_to_driver=False,
        # Train V2 run state (runs by name, attempts, workers) in the dashboard's Train view.
        runtime_env={"env_vars": env_vars},
    )
    url = getattr(context, "dashboard_url", None)
    print(
        f"Ray: {context.address_info.get('address', 'local')}"
        + (f", dashboard http://{url}" if url else ", dashboard not running"),
        flush=True,
    )
    return f"http://{url}" if url else None
