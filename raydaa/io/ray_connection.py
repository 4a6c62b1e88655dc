"""The Ray connection every command that runs trials opens."""

from __future__ import annotations

import os
import sys


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
        # the Name column of the dashboard's Jobs view: which command this job is
        job_config=ray.job_config.JobConfig(metadata={"job_name": job_name()}),
    )
    url = getattr(context, "dashboard_url", None)
    print(
        f"Ray: {context.address_info.get('address', 'local')}"
        + (f", dashboard http://{url}" if url else ", dashboard not running"),
        flush=True,
    )
    if url and token_auth_enabled():
        print(DASHBOARD_LOGIN, flush=True)
    return f"http://{url}" if url else None


def job_name() -> str:
    """`raydaa search --method dpo --scheduler asha`: the command as typed, cut to 120."""
    import shlex

    name = shlex.join(["raydaa", *sys.argv[1:]])
    return name if len(name) <= 120 else name[:119] + "…"


# What the dashboard's "Authentication Token Required" dialog wants, and where to get it.
DASHBOARD_LOGIN = (
    "  it asks for a token: paste what `ray get-auth-token` prints here (its cookie lasts\n"
    "  30 days). A cluster: `ray dashboard cluster.yaml` forwards it to your laptop's\n"
    "  http://127.0.0.1:8265, and `ray exec cluster.yaml 'ray get-auth-token'` prints the\n"
    "  head's token (docs/watching.md)"
)


def token_auth_enabled() -> bool:
    """Whether this Ray asks for a token (Ray >= 2.52 turns it on for a new local Ray
    unless RAY_AUTH_MODE=disabled)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # a Ray without token authentication
        return False
    return bool(is_token_auth_enabled())
