"""Loading a saved model wherever it lives: a hub id, a directory, or an object-store URI.

Below both train/ and evaluate/, so that each can load a checkpoint without importing the
other (the training loop's intermediate evaluation imports evaluate/).
"""

from __future__ import annotations

from raydaa.io import storage


def pretrained_model(path: str, **load_kwargs):
    """An HF checkpoint from a hub id, a directory, or an object-store URI (copied to this
    node's cache first: transformers reads only local files)."""
    from transformers import AutoModelForCausalLM

    if storage.is_uri(path):
        path = storage.local_copy(path)
    return AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
