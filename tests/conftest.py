"""Shared fixtures: one local Ray cluster per test module that needs one."""

import os

import pytest
import ray
import torch
from s3_server import s3_server

# Every Ray Train run of the session, in this process or in a `raydaa` command it starts:
# no preemption watcher or Ray Train metrics actors on a one-node test cluster (each is a
# process that imports Ray: ~4 CPU-s a run, measured on one tiny trial).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")


def pytest_collection_modifyitems(items):
    """Files with slow tests first, each file's tests in their own order: the README's test
    command runs two pytest-xdist workers, one file at a time each (`--dist loadfile`), and
    the many quick files left for last keep both busy until the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray, tuned for short test runs, shut down after the module."""
    with pytest.MonkeyPatch.context() as mp:
        # Propagated by Ray Train V2 to its controller: poll workers every 0.25 s instead
        # of 2 s (each run's end waits for a poll).
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        # address="local": always a fresh cluster, never one that happens to be running here
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()


def shrunken_search_spaces(
    root, method: str, tiny_grid: dict, *, prompts: int = 32, **tiny_updates
):
    """A copy of the shipped raydaa/search_spaces/ under `root` in which tiny's alignment runs are short (one
    epoch of 128-pair batches), evaluation uses `prompts` prompts, `tiny_updates` replace
    top-level sections' keys (e.g. data={...}, resources={...}), and `method`'s tiny grid is
    `tiny_grid` ({"betas": [...], "lrs": [...]}). Returns the copy's path."""
    import shutil
    from pathlib import Path

    import yaml

    from raydaa.config.scenario import search_spaces_dir

    root = Path(root)
    shutil.copytree(search_spaces_dir(), root)
    tiny_path = root / "scenarios" / "tiny.yaml"
    tiny = yaml.safe_load(tiny_path.read_text())
    tiny["align"].update(global_batch_size=128, micro_batch_size=64, epochs=1)
    tiny["generation"]["num_prompts"] = tiny["judge"]["num_prompts"] = prompts
    for section, values in tiny_updates.items():
        tiny[section].update(values)
    tiny_path.write_text(yaml.safe_dump(tiny))
    method_path = root / "methods" / f"{method}.yaml"
    spec = yaml.safe_load(method_path.read_text())
    spec["scenarios"]["tiny"] = tiny_grid
    method_path.write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture(scope="module")
def s3_env():
    """A real S3 server (moto) for the module, its endpoint and keys in the environment."""
    with s3_server() as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(params=["directory", "s3"])
def storage_root(request, tmp_path):
    """A fresh storage root of each kind: a directory, and a prefix on the S3 server."""
    if request.param == "directory":
        return str(tmp_path / "results")
    request.getfixturevalue("s3_env")
    return f"s3://raydaa/{request.node.name.replace('[', '-').rstrip(']')}"


@pytest.fixture(scope="session")
def tiny_sft(tmp_path_factory):
    """tiny's base model and an SFT model of it (200 steps of plain PyTorch on tiny's SFT
    data with SFTObjective: stage 1's loss, without Ray; enough to beat random init), made
    once for every test that needs a reference worth judging against."""
    from raydaa.config.scenario import load_scenario
    from raydaa.data.collators import SFTCollator
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer
    from raydaa.train.objectives import SFTObjective
    from raydaa.train.stages import prepare

    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = 64
    tokenizer = build_tiny_tokenizer()
    root = tmp_path_factory.mktemp("tiny_models")
    base = build_tiny_model(seed=scenario.seed)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")

    model = build_tiny_model(seed=scenario.seed)
    rows = prepare(scenario, "sft", tokenizer).dataset.to_list()
    collate, objective = SFTCollator(tokenizer.pad_token_id), SFTObjective()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model.train()
    for _ in range(200):
        batch = collate([rows[i] for i in torch.randint(len(rows), (32,), generator=generator)])
        loss, _ = objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    return scenario, str(root / "base"), str(root / "sft")
