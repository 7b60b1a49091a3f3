"""Triton forward and backward of the causal depthwise short convolution with SiLU.

Computes what :func:`breath.ops.short_conv.short_conv_reference` computes, with the pre-activation
and every gradient accumulated in fp32 (x, tail and weight may be bf16, fp16 or fp32; y comes back
in x's dtype). Per batch row and channel c, with x_t for t < 0 read from the tail (zeros without one):

    a_t = Σ_{j<w} W[c, j] · x_{t−w+1+j}            y_t = SiLU(a_t) = a_t σ(a_t)

Backward, with g_t = dy_t · σ(a_t)(1 + a_t(1 − σ(a_t))) for 0 ≤ t < T and g_t = 0 elsewhere:

    dx_u    = Σ_{k<w} W[c, w−1−k] · g_{u+k}          (0 ≤ u < T)
    dtail_r = the same sum at the tail's positions u = r − (w − 1) < 0        (r < w − 1)
    dW[c,j] = Σ_{b,t} g_t · x_{t−w+1+j}

Kernels. One program per (block of T, block of C, batch row); rows are strided, channels contiguous;
a tile's w shifted row blocks are w loads served mostly from cache. The forward stores only y.
The backward runs two kernels: ``_bwd_gate_kernel`` recomputes a, writes g (fp32) and the tile's
partial sums of dW, (programs, C, w) in fp32, which torch sums: deterministic, no atomics;
``_bwd_input_kernel`` then sums the w shifted rows of g into dx (and dtail). (Fusing the two, each
program recomputing g at the w shifts it needs, measured 1.2–1.9x slower on an H200: the kernels
are bound by instructions, not bytes.)

The ops are registered with ``torch.library.custom_op`` (``breath::short_conv_fwd``,
``breath::short_conv_bwd``) with fake implementations and ``register_autograd``, so
``torch.compile`` sees one opaque node per call; eager mode calls an ``autograd.Function`` running
the same launchers, which costs less host time per call than the custom op's dispatch (both wired
by :class:`breath.ops.custom.TritonOp`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from breath.ops.custom import TritonOp
from breath.ops.short_conv import new_tail

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class LaunchSettings:
    """Tile of one program, block_t rows × block_c contiguous channels, and its warps (the speed
    script compares settings)."""

    block_t: int = 32
    block_c: int = 128
    num_warps: int = 4


# Defaults measured on an H200 (B 32, T 1024, C 1536, bf16; benchmarks/short_conv_speed.py).
FORWARD_LAUNCH = LaunchSettings(32, 128, 4)
BACKWARD_LAUNCH = LaunchSettings(64, 128, 4)


@triton.jit
def _rows(x_base, tail_base, t0, c, c_valid, T, sx_t, st_t, BT: tl.constexpr, W: tl.constexpr,
          HAS_TAIL: tl.constexpr):
    """Input rows t0 .. t0 + BT − 1 (t0 may be negative) of channels c as fp32: x_t for 0 ≤ t < T,
    tail row t + w − 1 for −(w − 1) ≤ t < 0 (0 without a tail), 0 elsewhere."""
    t = t0 + tl.arange(0, BT)
    v = tl.load(x_base + t[:, None] * sx_t + c[None, :],
                mask=((t >= 0) & (t < T))[:, None] & c_valid[None, :], other=0.0).to(tl.float32)
    if HAS_TAIL:  # (a branch on t0 < 0 instead of this masked load measured slower on an H200)
        in_tail = (t < 0) & (t >= 1 - W)
        v += tl.load(tail_base + (t + W - 1)[:, None] * st_t + c[None, :],
                     mask=in_tail[:, None] & c_valid[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _fwd_kernel(x_ptr, tail_ptr, w_ptr, y_ptr, T, C, sx_b, sx_t, st_b, st_t, sy_b, sy_t,
                W: tl.constexpr, HAS_TAIL: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """y = SiLU(a) of one tile, a = Σ_j W[c, j] · x_{t−w+1+j} in fp32."""
    b = tl.program_id(2).to(tl.int64)
    t0 = tl.program_id(0) * BT
    t = t0 + tl.arange(0, BT)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    c_valid = c < C
    a = tl.zeros((BT, BC), dtype=tl.float32)
    for j in tl.static_range(W):
        tap = tl.load(w_ptr + c * W + j, mask=c_valid, other=0.0).to(tl.float32)
        a += tap[None, :] * _rows(x_ptr + b * sx_b, tail_ptr + b * st_b, t0 - (W - 1) + j, c, c_valid, T,
                                  sx_t, st_t, BT, W, HAS_TAIL)
    tl.store(y_ptr + b * sy_b + t[:, None] * sy_t + c[None, :], (a * tl.sigmoid(a)).to(y_ptr.dtype.element_ty),
             mask=(t < T)[:, None] & c_valid[None, :])


@triton.jit
def _bwd_gate_kernel(x_ptr, tail_ptr, w_ptr, dy_ptr, g_ptr, dw_part_ptr, T, C, sx_b, sx_t, st_b, st_t,
                     sdy_b, sdy_t, W: tl.constexpr, HAS_TAIL: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """g = dy · SiLU'(a) of one tile (fp32, a recomputed) and the tile's partial dW (BC, w)."""
    b = tl.program_id(2).to(tl.int64)
    pid_t = tl.program_id(0)
    t0 = pid_t * BT
    t = t0 + tl.arange(0, BT)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    c_valid = c < C
    valid = (t < T)[:, None] & c_valid[None, :]
    x_base, tail_base = x_ptr + b * sx_b, tail_ptr + b * st_b
    a = tl.zeros((BT, BC), dtype=tl.float32)
    for j in tl.static_range(W):
        tap = tl.load(w_ptr + c * W + j, mask=c_valid, other=0.0).to(tl.float32)
        a += tap[None, :] * _rows(x_base, tail_base, t0 - (W - 1) + j, c, c_valid, T, sx_t, st_t, BT, W, HAS_TAIL)
    dy = tl.load(dy_ptr + b * sdy_b + t[:, None] * sdy_t + c[None, :], mask=valid, other=0.0).to(tl.float32)
    s = tl.sigmoid(a)
    g = dy * s * (1.0 + a * (1.0 - s))  # 0 on rows t ≥ T, where dy loads as 0
    tl.store(g_ptr + (b * T + t[:, None]) * C + c[None, :], g, mask=valid)
    part = dw_part_ptr + ((b * tl.num_programs(0) + pid_t) * C + c) * W
    for j in tl.static_range(W):  # the shifted rows again (from cache): holding w tiles costs registers
        xj = _rows(x_base, tail_base, t0 - (W - 1) + j, c, c_valid, T, sx_t, st_t, BT, W, HAS_TAIL)
        tl.store(part + j, tl.sum(g * xj, 0), mask=c_valid)


@triton.jit
def _bwd_input_kernel(g_ptr, w_ptr, dx_ptr, dtail_ptr, T, C, sdx_b, sdx_t, sdt_b, sdt_t,
                      W: tl.constexpr, HAS_TAIL: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """dx_u = Σ_k W[c, w−1−k] · g_{u+k} of one tile. With a tail the rows start at −(w − 1), so the
    first program also writes dtail (the same sum at the tail's positions)."""
    b = tl.program_id(2).to(tl.int64)
    u = tl.program_id(0) * BT + tl.arange(0, BT) - (W - 1 if HAS_TAIL else 0)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    c_valid = c < C
    dx = tl.zeros((BT, BC), dtype=tl.float32)
    for k in tl.static_range(W):
        t = u + k
        g = tl.load(g_ptr + (b * T + t[:, None]) * C + c[None, :],
                    mask=((t >= 0) & (t < T))[:, None] & c_valid[None, :], other=0.0)
        tap = tl.load(w_ptr + c * W + (W - 1 - k), mask=c_valid, other=0.0).to(tl.float32)
        dx += tap[None, :] * g
    tl.store(dx_ptr + b * sdx_b + u[:, None] * sdx_t + c[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=((u >= 0) & (u < T))[:, None] & c_valid[None, :])
    if HAS_TAIL:
        tl.store(dtail_ptr + b * sdt_b + (u + W - 1)[:, None] * sdt_t + c[None, :],
                 dx.to(dtail_ptr.dtype.element_ty), mask=(u < 0)[:, None] & c_valid[None, :])


# ----------------------------------------------------------------------------------------------
# Launchers (plain tensors in and out)
# ----------------------------------------------------------------------------------------------


def _channels_contiguous(x: Tensor) -> Tensor:
    """The kernels take any batch and time strides but need unit stride along the channels."""
    return x if x.stride(-1) == 1 else x.contiguous()


def forward_launch(x: Tensor, weight: Tensor, tail: Tensor | None,
                   launch: LaunchSettings = FORWARD_LAUNCH) -> Tensor:
    """y (B, T, C) in x's dtype."""
    x = _channels_contiguous(x)
    B, T, C = x.shape
    W = weight.shape[1]
    y = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
    tail_arg = x if tail is None else _channels_contiguous(tail)  # never read without a tail
    _fwd_kernel[(triton.cdiv(T, launch.block_t), triton.cdiv(C, launch.block_c), B)](
        x, tail_arg, weight.contiguous(), y, T, C, *x.stride()[:2], *tail_arg.stride()[:2], *y.stride()[:2],
        W=W, HAS_TAIL=tail is not None, BT=launch.block_t, BC=launch.block_c, num_warps=launch.num_warps,
    )
    return y


def backward_launch(dy: Tensor, x: Tensor, weight: Tensor, tail: Tensor | None,
                    launch: LaunchSettings = BACKWARD_LAUNCH) -> tuple[Tensor, Tensor, Tensor]:
    """(dx in x's dtype, dW in weight's dtype, dtail in tail's dtype); without a tail, dtail is an
    empty (B, 0, C) tensor (a custom op returns tensors only)."""
    x, dy = _channels_contiguous(x), _channels_contiguous(dy)
    B, T, C = x.shape
    W = weight.shape[1]
    weight = weight.contiguous()
    has_tail = tail is not None
    tail_arg = _channels_contiguous(tail) if has_tail else x  # never read or written without a tail
    n_t, n_c = triton.cdiv(T, launch.block_t), triton.cdiv(C, launch.block_c)
    g = torch.empty(B, T, C, dtype=torch.float32, device=x.device)
    dw_part = torch.empty(B * n_t, C, W, dtype=torch.float32, device=x.device)
    _bwd_gate_kernel[(n_t, n_c, B)](
        x, tail_arg, weight, dy, g, dw_part, T, C, *x.stride()[:2], *tail_arg.stride()[:2], *dy.stride()[:2],
        W=W, HAS_TAIL=has_tail, BT=launch.block_t, BC=launch.block_c, num_warps=launch.num_warps,
    )
    dx = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
    dtail = torch.empty(B, W - 1 if has_tail else 0, C, dtype=tail_arg.dtype, device=x.device)
    dtail_arg = dtail if has_tail else dx
    n_u = triton.cdiv(T + (W - 1 if has_tail else 0), launch.block_t)  # with a tail, also its rows
    _bwd_input_kernel[(n_u, n_c, B)](
        g, weight, dx, dtail_arg, T, C, *dx.stride()[:2], *dtail_arg.stride()[:2],
        W=W, HAS_TAIL=has_tail, BT=launch.block_t, BC=launch.block_c, num_warps=launch.num_warps,
    )
    return dx, dw_part.sum(0).to(weight.dtype), dtail


# ----------------------------------------------------------------------------------------------
# Custom ops (one opaque node for torch.compile) and autograd
# ----------------------------------------------------------------------------------------------


def _forward(x: Tensor, weight: Tensor, tail: Tensor | None) -> Tensor:
    return forward_launch(x, weight, tail)


def _backward(dy: Tensor, x: Tensor, weight: Tensor, tail: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    return backward_launch(dy, x, weight, tail)


def _backward_fake(dy, x, weight, tail):
    B, _, C = x.shape
    dtail = x.new_empty(B, 0, C) if tail is None else tail.new_empty(tail.shape)
    return x.new_empty(x.shape), weight.new_empty(weight.shape), dtail


def _setup_context(ctx, inputs, y):
    ctx.save_for_backward(inputs.x, inputs.weight, inputs.tail)


def _gradients(ctx, backward, dy):
    x, weight, tail = ctx.saved_tensors
    dx, dw, dtail = backward(dy, x, weight, tail)
    return dict(x=dx, weight=dw, tail=None if tail is None else dtail)


_short_conv = TritonOp("short_conv", _forward, _backward, forward_fake=lambda x, weight, tail: x.new_empty(x.shape),
                       backward_fake=_backward_fake, setup_context=_setup_context, gradients=_gradients)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def short_conv_triton(x: Tensor, weight: Tensor, tail: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The Triton path of :func:`breath.ops.short_conv.short_conv` (same contract; fp32 accumulation)."""
    B, T, C = x.shape
    W = weight.shape[1]
    if weight.shape != (C, W) or W < 2 or T == 0:
        raise ValueError(f"expected x (B, T ≥ 1, C) and weight (C, w ≥ 2); got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if tail is not None and tail.shape != (B, W - 1, C):
        raise ValueError(f"expected tail (B, w − 1, C) = {(B, W - 1, C)}; got {tuple(tail.shape)}")
    for name, t in (("x", x), ("weight", weight), ("tail", tail)):
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"the Triton short conv takes bf16, fp16 or fp32; {name} is {t.dtype}")
    return _short_conv(x, weight, tail), new_tail(x, tail, W)
