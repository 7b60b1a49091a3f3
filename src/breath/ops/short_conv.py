"""Causal depthwise short convolution with SiLU: the PyTorch reference and the dispatch to Triton.

Per batch row, channel c, width w and taps ``W[c, 0..w−1]`` (the last tap is the current token):

    y_t[c] = SiLU( Σ_{j<w} W[c, j] · x_{t−w+1+j}[c] )

where x at t < 0 comes from ``tail``, the previous call's last w − 1 inputs (zeros without one).
The new tail is the last w − 1 rows of cat(tail, x), so a call continued from it equals one call
over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from breath.ops.backend import kernels_fit, note_fallback, require_kernels, triton_mode


def new_tail(x: Tensor, tail: Tensor | None, width: int) -> Tensor:
    """The last w − 1 rows of cat(tail, x) in x's dtype: a copy, since a view would keep the whole
    input alive inside the state. Only those rows are copied (T may be shorter than the tail)."""
    B, T, C = x.shape
    keep = max(width - 1 - T, 0)  # rows of the old tail still inside the window
    if tail is None:
        tail = x.new_zeros(B, keep, C)
    return torch.cat((tail[:, tail.shape[1] - keep:].to(x.dtype), x[:, T - (width - 1 - keep):]), dim=1)


def short_conv_reference(x: Tensor, weight: Tensor, tail: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The equation in PyTorch, computed in x's dtype (tail and weight are cast to it)."""
    width, length = weight.shape[1], x.shape[1]
    if tail is None:
        tail = x.new_zeros(x.shape[0], width - 1, x.shape[2])
    padded = torch.cat((tail.to(x.dtype), x), dim=1)
    weight = weight.to(x.dtype)
    # A sum of shifted products, not F.conv1d: torch.compile fuses it with the SiLU into one kernel.
    y = sum(weight[:, j] * padded[:, j : j + length] for j in range(width))
    return F.silu(y), new_tail(x, tail, width)


def short_conv(x: Tensor, weight: Tensor, tail: Tensor | None = None,
               use_triton: str | bool | None = "auto") -> tuple[Tensor, Tensor]:
    """Causal depthwise convolution over time with SiLU (see the module docstring).

    Args:
        x: (B, T, C), T ≥ 1.
        weight: (C, w) taps, w ≥ 2; the last tap multiplies the current token.
        tail: (B, w − 1, C), the previous call's last w − 1 inputs; None is zeros.
        use_triton: "on" runs the Triton kernels (:mod:`breath.ops.short_conv_triton`: pre-activation
            and gradients accumulated in fp32; CUDA tensors, or CPU under ``TRITON_INTERPRET=1``);
            "off" the PyTorch reference; "auto" the kernels when ``backend.kernels_fit(x)`` and x is
            not float64, else the reference.

    Returns:
        y (B, T, C) in x's dtype and the new tail (B, w − 1, C) in x's dtype (a copy).
    """
    mode = triton_mode(use_triton)
    if mode == "auto":
        fits = kernels_fit(x)
        if fits and x.dtype == torch.float64:
            note_fallback("the short-convolution kernels take bf16, fp16 or fp32; a float64 one runs in PyTorch")
        mode = "on" if fits and x.dtype != torch.float64 else "off"
    if mode == "on":
        require_kernels(x, "short_conv")
        # Imported here: tests set TRITON_INTERPRET before triton is first imported.
        from breath.ops.short_conv_triton import short_conv_triton

        return short_conv_triton(x, weight, tail)
    return short_conv_reference(x, weight, tail)
