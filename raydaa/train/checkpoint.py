"""Save and restore the full training state of a DeepSpeed engine in a Ray checkpoint.

Layout of one Ray checkpoint directory (Ray merges the per-rank directories into one):

    deepspeed/state/...         DeepSpeed save_checkpoint: model states (rank 0) and one
                                ZeRO optimizer shard per rank, lr scheduler, client state
    rng/rank_{r}.pt             torch RNG state of rank r (dropout etc. replay on resume)
    hf/                         final checkpoint only: HF save_pretrained of the model
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DS_DIR = "deepspeed"
DS_TAG = "state"
HF_DIR = "hf"
RNG_DIR = "rng"


def save_training_state(engine: Any, directory: Path, *, rank: int,
                        client_state: dict[str, Any]) -> None:
    """Write this rank's part of the engine state into `directory` (collective: every
    rank must call it, each with its own local directory)."""
    # DeepSpeed creates save_dir on rank 0 only; each rank writes to its own temp dir.
    (directory / DS_DIR / DS_TAG).mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory / DS_DIR), tag=DS_TAG, client_state=client_state)
    (directory / RNG_DIR).mkdir(exist_ok=True)
    torch.save(_rng_state(), directory / RNG_DIR / f"rank_{rank}.pt")


def load_training_state(engine: Any, directory: Path, *, rank: int) -> dict[str, Any]:
    """Restore model, optimizer, lr scheduler and RNG state; returns the client state."""
    load_path, client_state = engine.load_checkpoint(
        str(directory / DS_DIR), tag=DS_TAG,
        load_optimizer_states=True, load_lr_scheduler_states=True,
    )
    if load_path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory / DS_DIR}")
    rng_file = directory / RNG_DIR / f"rank_{rank}.pt"
    if rng_file.exists():  # absent when resuming with more workers than were saved
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return client_state or {}


def export_hf(engine: Any, directory: Path, *, rank: int, zero_stage: int) -> None:
    """HF `save_pretrained` of the trained model into `directory/hf` (collective under
    ZeRO-3, where the weights are gathered from all ranks first)."""
    state_dict = None
    if zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank == 0:
        engine.module.save_pretrained(str(directory / HF_DIR), state_dict=state_dict)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
