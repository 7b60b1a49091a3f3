"""The loss of a language model on token windows: one definition for validation in training and
for ``breath eval``, so the two report the same number for the same weights and windows.

For a window x_1..x_T with labels y_t = x_{t+1} the loss at position t is the cross-entropy

    ℓ_t = −log softmax(logits_t)[y_t]        (nats per token)

and the loss of a set of windows is the mean of ℓ_t over all their tokens; ``perplexity`` is its
exponential.

Precision: fp32 always, on every device. Training steps may run under bf16 autocast
(``--precision``), but a reported loss should not depend on the hardware or on a training option:
fp32 gives the same number on the CPU and on CUDA (up to summation order), and the same number in
``breath eval`` as in the run's validation. The cost is that validation forwards run at fp32 speed
on CUDA (no bf16 autocast: its matrix products several times slower than bf16); validation is
forward-only over the val split (``--num-val-batches`` bounds it), a small share of an epoch.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ℓ_t for every token: logits (B, T, V), labels (B, T) → (B, T) float32."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")


@torch.no_grad()
def position_loss_sums(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       device: torch.device, num_batches: int | None = None) -> tuple[torch.Tensor, int]:
    """Sum of ℓ_t over the windows of ``batches`` at each position t (float64, on ``device``) and
    the number of windows; the first ``num_batches`` batches only when given. In fp32 (autocast
    off, see the module docstring); the caller puts the model in eval mode.

    ``model`` is called as ``model(input_ids).logits``: the plain module, or it wrapped (data
    parallel, compiled) as the trainer calls it.
    """
    sums, windows = None, 0
    with torch.autocast(device_type=device.type, enabled=False):
        for i, (input_ids, labels) in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            losses = token_losses(model(input_ids.to(device)).logits, labels.to(device))
            batch_sums = losses.sum(dim=0, dtype=torch.float64)
            sums = batch_sums if sums is None else sums + batch_sums
            windows += len(input_ids)
    if sums is None:
        raise ValueError("no windows to evaluate")
    return sums, windows


def perplexity(loss: float) -> float:
    """exp(mean token loss), inf instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
