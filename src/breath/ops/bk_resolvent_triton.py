r"""Triton forward and backward kernels of the CAUSAL BK resolvent (the one the language model uses).

Same recursion and adjoint as :mod:`breath.ops.bk_resolvent` (see its docstring), in float32:

    forward   g_t = 1 / (e_t - s_t),  s_0 = σ,  s_{t+1} = β_t g_t                 (t = 0 .. T-1)
    backward  u_t = conj(g_t)² (Ḡ_t + conj(β_t) u_{t+1}),  u_T = 0                 (t = T-1 .. 0)
              ē_t = -u_t,  β̄_t = conj(g_t) u_{t+1},  σ̄ = u_0

Layout: time-major ``(T, N)`` complex64 tensors (N = number of chains), read through
``torch.view_as_real`` as separate float32 real and imaginary views (Triton has no complex type):
re at ``base + 2k``, im at ``base + 2k + 1``. No copies are made to split or join the parts.

Parallelisation: one program owns ``BLOCK_N`` chains (one chain per thread) and walks the whole
sequence; the recursion is sequential in t. To keep global-memory latency off the sequential
critical path, a program loads ``CHUNK`` time steps of every input as one ``(CHUNK, BLOCK_N)`` tile
(all loads in flight at once), runs the ``CHUNK`` recursion steps on registers (a row is picked out
of the tile by a compile-time mask, an in-thread select since each thread holds its chain's whole
column), and stores the outputs of the chunk as one tile. ``CHUNK = 1`` is the plain
one-load-per-step loop. The defaults were picked on an H100 with ``benchmarks/gpu_check_bk.py``.

Under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported) the kernels also run on CPU
tensors, which is how the tests exercise them on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["bk_causal_triton", "BLOCK_N", "CHUNK", "NUM_WARPS"]

# Launch defaults (see the module docstring); BLOCK_N = 32 * NUM_WARPS gives one chain per thread.
BLOCK_N = 32
NUM_WARPS = 1
CHUNK = 16


@triton.jit
def _bk_causal_fwd_kernel(
    e_re, e_im, b_re, b_im, s_re, s_im, g_re, g_im,
    T, N, stride_t, stride_n,
    HAS_SIGMA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    col = n.to(tl.int64) * stride_n
    if HAS_SIGMA:
        sr = tl.load(s_re + col, mask=nmask, other=0.0)
        si = tl.load(s_im + col, mask=nmask, other=0.0)
    else:
        sr = tl.zeros([BLOCK_N], dtype=tl.float32)
        si = tl.zeros([BLOCK_N], dtype=tl.float32)
    rows = tl.arange(0, CHUNK)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        off = t.to(tl.int64)[:, None] * stride_t + col[None, :]
        m = (t < T)[:, None] & nmask[None, :]
        mb = (t < T - 1)[:, None] & nmask[None, :]
        er_tile = tl.load(e_re + off, mask=m, other=1.0)
        ei_tile = tl.load(e_im + off, mask=m, other=0.0)
        br_tile = tl.load(b_re + off, mask=mb, other=0.0)
        bi_tile = tl.load(b_im + off, mask=mb, other=0.0)
        gr_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        gi_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        for i in tl.static_range(CHUNK):
            sel = rows[:, None] == i
            er = tl.sum(tl.where(sel, er_tile, 0.0), axis=0)
            ei = tl.sum(tl.where(sel, ei_tile, 0.0), axis=0)
            br = tl.sum(tl.where(sel, br_tile, 0.0), axis=0)
            bi = tl.sum(tl.where(sel, bi_tile, 0.0), axis=0)
            dr = er - sr
            di = ei - si
            inv = 1.0 / (dr * dr + di * di)
            gr = dr * inv
            gi = -di * inv
            gr_tile = tl.where(sel, gr[None, :], gr_tile)
            gi_tile = tl.where(sel, gi[None, :], gi_tile)
            sr = br * gr - bi * gi
            si = br * gi + bi * gr
        tl.store(g_re + off, gr_tile, mask=m)
        tl.store(g_im + off, gi_tile, mask=m)


@triton.jit
def _bk_causal_bwd_kernel(
    g_re, g_im, go_re, go_im, b_re, b_im,
    ge_re, ge_im, gb_re, gb_im, gs_re, gs_im,
    T, N, stride_t, stride_n,
    HAS_SIGMA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    col = n.to(tl.int64) * stride_n
    ur = tl.zeros([BLOCK_N], dtype=tl.float32)  # u_{t+1}
    ui = tl.zeros([BLOCK_N], dtype=tl.float32)
    rows = tl.arange(0, CHUNK)
    n_chunks = tl.cdiv(T, CHUNK)
    for k in range(0, n_chunks):
        t = (n_chunks - 1 - k) * CHUNK + rows
        off = t.to(tl.int64)[:, None] * stride_t + col[None, :]
        m = (t < T)[:, None] & nmask[None, :]
        mb = (t < T - 1)[:, None] & nmask[None, :]
        # padding rows (t >= T) load g = 0, so they keep u = 0 on the way down
        gr_tile = tl.load(g_re + off, mask=m, other=0.0)
        gi_tile = tl.load(g_im + off, mask=m, other=0.0)
        Gr_tile = tl.load(go_re + off, mask=m, other=0.0)
        Gi_tile = tl.load(go_im + off, mask=m, other=0.0)
        br_tile = tl.load(b_re + off, mask=mb, other=0.0)
        bi_tile = tl.load(b_im + off, mask=mb, other=0.0)
        er_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        ei_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        qr_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        qi_tile = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        for j in tl.static_range(CHUNK):
            sel = rows[:, None] == (CHUNK - 1 - j)
            gr = tl.sum(tl.where(sel, gr_tile, 0.0), axis=0)
            gi = tl.sum(tl.where(sel, gi_tile, 0.0), axis=0)
            Gr = tl.sum(tl.where(sel, Gr_tile, 0.0), axis=0)
            Gi = tl.sum(tl.where(sel, Gi_tile, 0.0), axis=0)
            br = tl.sum(tl.where(sel, br_tile, 0.0), axis=0)
            bi = tl.sum(tl.where(sel, bi_tile, 0.0), axis=0)
            # β̄_t = conj(g_t) u_{t+1}
            qr_tile = tl.where(sel, (gr * ur + gi * ui)[None, :], qr_tile)
            qi_tile = tl.where(sel, (gr * ui - gi * ur)[None, :], qi_tile)
            # v = Ḡ_t + conj(β_t) u_{t+1};  u_t = conj(g_t)² v
            vr = Gr + br * ur + bi * ui
            vi = Gi + br * ui - bi * ur
            cr = gr * gr - gi * gi
            ci = -2.0 * gr * gi
            ur = cr * vr - ci * vi
            ui = cr * vi + ci * vr
            er_tile = tl.where(sel, -ur[None, :], er_tile)
            ei_tile = tl.where(sel, -ui[None, :], ei_tile)
        tl.store(ge_re + off, er_tile, mask=m)
        tl.store(ge_im + off, ei_tile, mask=m)
        tl.store(gb_re + off, qr_tile, mask=mb)
        tl.store(gb_im + off, qi_tile, mask=mb)
    if HAS_SIGMA:
        tl.store(gs_re + col, ur, mask=nmask)
        tl.store(gs_im + col, ui, mask=nmask)


def _parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """float32 real and imaginary views of a contiguous complex64 tensor (no copy)."""
    v = torch.view_as_real(x)
    return v[..., 0], v[..., 1]


def _check(e: Tensor) -> None:
    if e.dtype != torch.complex64:
        raise TypeError(f"bk_resolvent (Triton): computes in float32, needs complex64, got {e.dtype}")


class BKCausalTriton(torch.autograd.Function):
    """Causal BK resolvent on time-major (T, N) complex64 inputs, Triton forward and backward."""

    @staticmethod
    def forward(ctx, e: Tensor, beta: Tensor, sigma: Tensor | None, chunk: int, block_n: int,
                num_warps: int) -> Tensor:
        _check(e)
        T, N = e.shape
        e = e.contiguous()
        beta = beta.contiguous() if T > 1 else e  # a placeholder pointer, never read when T == 1
        g = torch.empty_like(e)
        s = sigma.contiguous() if sigma is not None else e[0]
        grid = (triton.cdiv(N, block_n),)
        _bk_causal_fwd_kernel[grid](
            *_parts(e), *_parts(beta), *_parts(s), *_parts(g),
            T, N, 2 * N, 2,
            HAS_SIGMA=sigma is not None, CHUNK=chunk, BLOCK_N=block_n, num_warps=num_warps,
        )
        ctx.save_for_backward(g, beta)
        ctx.has_sigma = sigma is not None
        ctx.cfg = (chunk, block_n, num_warps)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_g: Tensor):
        g, beta = ctx.saved_tensors
        chunk, block_n, num_warps = ctx.cfg
        T, N = g.shape
        grad_g = grad_g.to(torch.complex64).contiguous()
        grad_e = torch.empty_like(g)
        grad_beta = torch.empty(max(T - 1, 0), N, dtype=g.dtype, device=g.device)
        gb = grad_beta if T > 1 else g  # placeholder, never written when T == 1
        grad_sigma = torch.empty(N, dtype=g.dtype, device=g.device) if ctx.has_sigma else None
        gs = grad_sigma if grad_sigma is not None else g[0]
        grid = (triton.cdiv(N, block_n),)
        _bk_causal_bwd_kernel[grid](
            *_parts(g), *_parts(grad_g), *_parts(beta),
            *_parts(grad_e), *_parts(gb), *_parts(gs),
            T, N, 2 * N, 2,
            HAS_SIGMA=ctx.has_sigma, CHUNK=chunk, BLOCK_N=block_n, num_warps=num_warps,
        )
        return grad_e, grad_beta, grad_sigma, None, None, None


def bk_causal_triton(e: Tensor, beta: Tensor, sigma: Tensor | None = None, chunk: int | None = None,
                     block_n: int | None = None, num_warps: int | None = None) -> Tensor:
    """Causal g for time-major e (T, N), beta (T-1, N), sigma (N,) or None, all complex64.
    Launch parameters left as None take the module's CHUNK, BLOCK_N and NUM_WARPS."""
    return BKCausalTriton.apply(e, beta, sigma, CHUNK if chunk is None else chunk,
                                BLOCK_N if block_n is None else block_n,
                                NUM_WARPS if num_warps is None else num_warps)
