"""Training checkpoints, written: atomically (``breath.io``), so a kill mid-save leaves the previous
file intact.

A checkpoint is the trainer's ``state_dict``: the seed's keys (``breath.runs.CHECKPOINT_KEYS``)
plus ``trainer_state`` for exact resume, all tensors and plain containers so that
``breath.runs.load_checkpoint`` reads it with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from breath.io import atomic_write


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a checkpoint (a dict of tensors and plain containers)."""
    atomic_write(path, lambda file: torch.save(state, file))
