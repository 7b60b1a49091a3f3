"""What a forward pass returns: logits, the state to continue the sequence, and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ModelState:
    """Everything needed to continue a sequence: the absolute position of the next token (so the
    memory consolidates at the same places as a parallel pass) and one entry per layer (phase2:
    last Green's function and memory state; phase1: last Green's function; transformer: KV cache)."""

    pos: int
    layers: tuple[Any, ...]

    def nbytes(self) -> int:
        """Bytes held by the state's tensors: constant in the context for phase2/phase1, growing
        with it for the transformer's KV cache."""
        return sum(t.numel() * t.element_size() for t in _tensors(self.layers))


def _tensors(item: Any):
    if isinstance(item, torch.Tensor):
        yield item
    elif isinstance(item, (tuple, list)):
        for part in item:
            yield from _tensors(part)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, vocab)
    state: ModelState
    diagnostics: dict[str, Any] = field(default_factory=dict)
