"""Causal depthwise short convolution over time, the "short conv" of linear-attention layers.

Per channel c, with width w and learned taps ``W[c, 0..w−1]`` (the last tap is the current token):

    y_t[c] = SiLU( Σ_{j<w} W[c, j] · x_{t−w+1+j}[c] )        x_{t<0} = 0

It lets a memory's key, query and value at t depend on the few tokens before t, so a write can
bind "what came before" to "what comes now" (associative recall), while the token's own features
stay available (unlike a fixed shift). The state is the last ``w − 1`` inputs, so a call continued
from it equals one call over the whole sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from breath.ops.short_conv import short_conv


class ShortConv(nn.Module):
    """Taps ``weight`` (channels, width); ``use_triton`` picks the op's path (auto | on | off,
    see :func:`breath.ops.short_conv.short_conv`)."""

    def __init__(self, channels: int, width: int, use_triton: str = "auto"):
        super().__init__()
        if width < 2:
            raise ValueError(f"ShortConv: width must be >= 2, got {width}")
        self.width = width
        self.use_triton = use_triton
        # nn.Conv1d's default init for a depthwise filter: uniform in ±1/√width.
        bound = 1 / math.sqrt(width)
        self.weight = nn.Parameter(torch.empty(channels, width).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) and the previous call's last w−1 inputs (None: zeros) → (y (B, T, C), new tail)."""
        return short_conv(x, self.weight, tail, use_triton=self.use_triton)
