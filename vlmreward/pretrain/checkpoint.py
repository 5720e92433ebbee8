"""Training state of ``vlmreward pretrain`` (``<out>/checkpoint.pt``): model, optimiser, scheduler, history.

Model I/O (architectures, tokenizers, the hub layout of exported models) is :mod:`vlmreward.models`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vlmreward.models import write_atomically


def save_training_state(path, state: dict) -> None:
    """``torch.save`` ``state`` (tensors, numbers, strings, containers of them) to ``path`` atomically
    (:func:`vlmreward.models.write_atomically`): a crash never leaves a broken checkpoint."""
    write_atomically({Path(path): lambda tmp: torch.save(state, tmp)})


def load_training_state(path) -> dict:
    """Inverse of :func:`save_training_state` (``weights_only=True``: no code runs).

    Raises FileNotFoundError for a missing file, ValueError for a corrupt or truncated one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbage files
        raise ValueError(f"corrupt or truncated checkpoint {path}: {e}") from e
