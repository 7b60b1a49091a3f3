r"""Triton forward and backward kernels of the CAUSAL BK resolvent (the one the language model uses).

Same recursion and adjoint as :mod:`breath.ops.bk_resolvent` (see its docstring), in float32:

    forward   g_t = 1 / (e_t - s_t),  s_0 = σ,  s_{t+1} = β_t g_t                 (t = 0 .. T-1)
    backward  u_t = conj(g_t)² (Ḡ_t + conj(β_t) u_{t+1}),  u_T = 0                 (t = T-1 .. 0)
              ē_t = -u_t,  β̄_t = conj(g_t) u_{t+1},  σ̄ = u_0

Layout: time-major ``(T, N)`` complex64 tensors (N = number of chains), passed on as their
``torch.view_as_real`` views ``(T, N, 2)`` float32 (Triton has no complex type) and read as separate
real and imaginary planes: re at ``base + 2k``, im at ``base + 2k + 1``. No copies are made to split
or join the parts. :func:`bk_causal_triton_real` takes such real tensors directly.

Parallelisation: one program owns ``BLOCK_N`` chains (one chain per thread) and walks the whole
sequence (or one chunk of it: the chunked scan below); the recursion is sequential in t, so a step
costs at least one global-load latency unless loads are issued ahead. Each loop iteration therefore first issues the loads of ``UNROLL``
consecutive time steps (they do not depend on the recursion, so they are all in flight together),
then runs the ``UNROLL`` steps on registers, storing each output as it is made. ``STAGES`` is the
time loop's ``num_stages`` (Triton's software pipeliner).

The defaults (UNROLL=8, STAGES=3, BLOCK_N=32, one warp) come from the sweep of
``benchmarks/gpu_check_bk.py`` on an H100 (Triton 3.6), bare kernels on inputs not in L2:

    (N chains, T)     UNROLL=1,STAGES=1 fwd / fwd+bwd     UNROLL=8,STAGES=3 fwd / fwd+bwd
    (256, 1024)       0.45 / 0.89 ms                       0.10 / 0.63 ms
    (32, 8192)        3.59 / 7.04 ms                       0.80 / 1.76 ms

i.e. ~440 ns per step (one HBM load latency) down to ~100 ns. Other configurations with UNROLL
>= 4 were within ~20-30% (noise of one measurement each); BLOCK_N = 64 with two warps was no better.
A first design that loaded ``(CHUNK, BLOCK_N)`` tiles and picked rows out with masked reductions was
2-30x slower than the one-step loop for CHUNK = 4-32: the row selection was not folded away.

**Chunked scan over the sequence.** With few chains (the base preset at B4 has N = 32: one warp
on one SM walking 8192 steps) the sequential kernel leaves the GPU idle. The recursion is a Möbius
map of the self-energy, ``s_{t+1} = β_t / (e_t − s_t)``, i.e. the 2x2 transfer matrix
``M_t = [[0, β_t], [−1, e_t]]`` acting projectively on ``(s, 1)``; composition is associative, so
with the sequence cut into chunks of CHUNK steps the forward runs as

1. ``_bk_fwd_maps_kernel``, one program per (block of chains, chunk but the last): the chunk's
   product ``P = M_{end−1} ⋯ M_{begin}``, divided at every step by its largest component (only the
   ratio ``s_out = (p₀₀ s + p₀₁)/(p₁₀ s + p₁₁)`` matters, so nothing overflows in float32);
2. ``_bk_fwd_scan_kernel``, one thread per chain: the chunk maps applied in turn from ``σ``, giving
   every chunk's true starting ``s`` (T/CHUNK dependent steps);
3. the forward kernel above, one program per (block of chains, chunk), replaying each chunk from
   its start with the same per-step recursion (so ``g`` is computed as by the sequential kernel).

The adjoint ``u_t = conj(g_t)² (Ḡ_t + conj(β_t) u_{t+1})`` is linear: the backward kernel with
``AFFINE`` sums each chunk but the first up as ``u_begin = A u_end + B`` (A the product of
``conj(g_t)² conj(β_t)``, B the chunk's u from a zero carry), ``_bk_bwd_scan_kernel`` runs the
carries across chunks in reverse, and the backward kernel above replays every chunk from its carry.
A is ``∂s_end/∂s_begin`` of the forward chunk map, a contraction of the upper half plane in the
model, so it does not overflow. The result equals the sequential kernel's to float32 rounding (the
chunk starts differ by a rounding, which the contracting map damps within a few steps).

:func:`scan_chunk` picks sequential vs chunked and the chunk length from (T, N) only, by a latency
cost model written in its docstring: sequential for N >= SEQUENTIAL_MIN_CHAINS or T < SCAN_MIN_T,
else a power of two near sqrt(T/2) (32 at T 2048, 64 at T 8192, 128 at T 32768).
``benchmarks/gpu_check_bk.py --scan`` times the sequential kernel against every chunk length at
(chains, T) = (32, 8192), (8, 32768), (256, 1024). On an H100 (2026-12-07,
``benchmarks/results/bk_scan_2026-12-07_h100.json``), forward + backward: the rule's chunk was the
fastest at T 8192 (0.89 ms against 1.70 sequential) and within 2% of it at T 32768 (0.86 against
6.75); at T 1024 every chunk length lost to the sequential kernel (0.58 ms against 0.64-1.02),
which set SCAN_MIN_T.

Under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported) the kernels also run on CPU
tensors, which is how the tests exercise them on machines without a GPU.

The forward and backward (either form, the chunk length being one more launch parameter) are
registered with ``torch.library.custom_op`` (``breath::bk_causal_fwd``, ``breath::bk_causal_bwd``)
on those real views, with fake implementations and ``register_autograd``,
so ``torch.compile`` sees one opaque node per call instead of tracing into an autograd.Function
and the launch itself (under the interpreter, Dynamo failed inside the kernel). The arguments are
real because compiled graphs handle complex tensors poorly. Eager mode calls an
``autograd.Function`` running the same launchers (:class:`breath.ops.custom.TritonOp` wires both):
it costs less host time per call than the custom op's dispatch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from breath.ops.custom import TritonOp

__all__ = ["bk_causal_triton", "bk_causal_triton_real", "scan_chunk", "BLOCK_N", "NUM_WARPS", "UNROLL", "STAGES"]

# Launch defaults (see the module docstring); BLOCK_N = 32 * NUM_WARPS gives one chain per thread.
BLOCK_N = 32
NUM_WARPS = 1
UNROLL = 8  # time steps per loop iteration whose loads are issued together: 1, 2, 4 or 8
STAGES = 3  # num_stages of the time loop (Triton's software pipeliner)
# Chunked scan (see scan_chunk; SCAN_MIN_T from the H100 timings, the rest from the cost model)
SEQUENTIAL_MIN_CHAINS = 4 * 132 * 32  # four one-warp programs per SM of a 132-SM GPU: sequential
CHUNK_MIN, CHUNK_MAX = 32, 512  # powers of two, multiples of every UNROLL
SCAN_MIN_T = 2048  # shorter sequences run sequentially
SCAN_UNROLL = 4  # chunk maps whose loads the scans over chunks issue together: 1, 2 or 4


@triton.jit
def _step_offsets(t, T, col, nmask, stride_t):
    """Offsets of step t in every chain, and the masks of its sites (t < T) and links (t < T − 1)."""
    # as an int64 vector: the interpreter's loop index is a Python int, and its `vector & scalar`
    # makes an int32 mask that tl.load rejects
    t = tl.cast(t, tl.int64) + tl.zeros_like(col)
    return t * stride_t + col, nmask & (t < T), nmask & (t < T - 1)


@triton.jit
def _load_e_beta(e_re, e_im, b_re, b_im, off, m, mb):
    """e (1 where m is off) and β (0 where mb is off) at the offsets off."""
    er = tl.load(e_re + off, mask=m, other=1.0)
    ei = tl.load(e_im + off, mask=m, other=0.0)
    br = tl.load(b_re + off, mask=mb, other=0.0)
    bi = tl.load(b_im + off, mask=mb, other=0.0)
    return er, ei, br, bi


@triton.jit
def _fwd_load(e_re, e_im, b_re, b_im, t, T, col, nmask, stride_t):
    off, m, mb = _step_offsets(t, T, col, nmask, stride_t)
    return _load_e_beta(e_re, e_im, b_re, b_im, off, m, mb)


@triton.jit
def _fwd_step(er, ei, br, bi, sr, si, g_re, g_im, t, T, col, nmask, stride_t):
    """g_t = 1/(e_t - s_t), stored; returns s_{t+1} = β_t g_t."""
    dr = er - sr
    di = ei - si
    inv = 1.0 / (dr * dr + di * di)
    gr = dr * inv
    gi = -di * inv
    off, m, _ = _step_offsets(t, T, col, nmask, stride_t)
    tl.store(g_re + off, gr, mask=m)
    tl.store(g_im + off, gi, mask=m)
    return br * gr - bi * gi, br * gi + bi * gr


@triton.jit
def _bk_causal_fwd_kernel(
    e_re, e_im, b_re, b_im, s_re, s_im, g_re, g_im,
    T, N, stride_t, stride_n, stride_sc, CHUNK,
    HAS_SIGMA: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Steps [c·CHUNK, min((c+1)·CHUNK, T)) of chunk c = program_id(1), from the start s read at
    ``s + c·stride_sc`` (the sequential kernel: one chunk, CHUNK >= T)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    col = n.to(tl.int64) * stride_n
    if HAS_SIGMA:
        sr = tl.load(s_re + c * stride_sc + col, mask=nmask, other=0.0)
        si = tl.load(s_im + c * stride_sc + col, mask=nmask, other=0.0)
    else:
        sr = tl.zeros([BLOCK_N], dtype=tl.float32)
        si = tl.zeros([BLOCK_N], dtype=tl.float32)
    # CHUNK is a multiple of UNROLL, so only the last chunk has rows past its end (t >= T, masked)
    t_begin = c * CHUNK
    for t0 in tl.range(t_begin, tl.minimum(t_begin + CHUNK, T), UNROLL, num_stages=STAGES):
        # issue every load of the block first (independent of the recursion), then the steps
        er0, ei0, br0, bi0 = _fwd_load(e_re, e_im, b_re, b_im, t0, T, col, nmask, stride_t)
        if UNROLL > 1:
            er1, ei1, br1, bi1 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 1, T, col, nmask, stride_t)
        if UNROLL > 2:
            er2, ei2, br2, bi2 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 2, T, col, nmask, stride_t)
            er3, ei3, br3, bi3 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 3, T, col, nmask, stride_t)
        if UNROLL > 4:
            er4, ei4, br4, bi4 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 4, T, col, nmask, stride_t)
            er5, ei5, br5, bi5 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 5, T, col, nmask, stride_t)
            er6, ei6, br6, bi6 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 6, T, col, nmask, stride_t)
            er7, ei7, br7, bi7 = _fwd_load(e_re, e_im, b_re, b_im, t0 + 7, T, col, nmask, stride_t)
        sr, si = _fwd_step(er0, ei0, br0, bi0, sr, si, g_re, g_im, t0, T, col, nmask, stride_t)
        if UNROLL > 1:
            sr, si = _fwd_step(er1, ei1, br1, bi1, sr, si, g_re, g_im, t0 + 1, T, col, nmask, stride_t)
        if UNROLL > 2:
            sr, si = _fwd_step(er2, ei2, br2, bi2, sr, si, g_re, g_im, t0 + 2, T, col, nmask, stride_t)
            sr, si = _fwd_step(er3, ei3, br3, bi3, sr, si, g_re, g_im, t0 + 3, T, col, nmask, stride_t)
        if UNROLL > 4:
            sr, si = _fwd_step(er4, ei4, br4, bi4, sr, si, g_re, g_im, t0 + 4, T, col, nmask, stride_t)
            sr, si = _fwd_step(er5, ei5, br5, bi5, sr, si, g_re, g_im, t0 + 5, T, col, nmask, stride_t)
            sr, si = _fwd_step(er6, ei6, br6, bi6, sr, si, g_re, g_im, t0 + 6, T, col, nmask, stride_t)
            sr, si = _fwd_step(er7, ei7, br7, bi7, sr, si, g_re, g_im, t0 + 7, T, col, nmask, stride_t)


@triton.jit
def _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t, T, col, nmask, stride_t):
    off, m, mb = _step_offsets(t, T, col, nmask, stride_t)
    # rows past the end (t >= T) load g = 0, so they keep u = 0 on the way down
    gr = tl.load(g_re + off, mask=m, other=0.0)
    gi = tl.load(g_im + off, mask=m, other=0.0)
    Gr = tl.load(go_re + off, mask=m, other=0.0)
    Gi = tl.load(go_im + off, mask=m, other=0.0)
    br = tl.load(b_re + off, mask=mb, other=0.0)
    bi = tl.load(b_im + off, mask=mb, other=0.0)
    return gr, gi, Gr, Gi, br, bi


@triton.jit
def _bwd_step(gr, gi, Gr, Gi, br, bi, ur, ui, ge_re, ge_im, gb_re, gb_im, t, T, col, nmask, stride_t):
    """From u_{t+1}: store β̄_t = conj(g_t) u_{t+1} and ē_t = -u_t; return
    u_t = conj(g_t)² (Ḡ_t + conj(β_t) u_{t+1})."""
    off, m, mb = _step_offsets(t, T, col, nmask, stride_t)
    tl.store(gb_re + off, gr * ur + gi * ui, mask=mb)
    tl.store(gb_im + off, gr * ui - gi * ur, mask=mb)
    vr = Gr + br * ur + bi * ui
    vi = Gi + br * ui - bi * ur
    cr = gr * gr - gi * gi
    ci = -2.0 * gr * gi
    nr = cr * vr - ci * vi
    ni = cr * vi + ci * vr
    tl.store(ge_re + off, -nr, mask=m)
    tl.store(ge_im + off, -ni, mask=m)
    return nr, ni


@triton.jit
def _affine_step(gr, gi, Gr, Gi, br, bi, ur, ui, ar, ai):
    """u ← conj(g)² (Ḡ + conj(β) u) and A ← conj(g)² conj(β) A, one step down."""
    cr = gr * gr - gi * gi  # conj(g)²
    ci = -2.0 * gr * gi
    kr = cr * br + ci * bi  # conj(g)² conj(β)
    ki = ci * br - cr * bi
    return (cr * Gr - ci * Gi + kr * ur - ki * ui, cr * Gi + ci * Gr + kr * ui + ki * ur,
            kr * ar - ki * ai, kr * ai + ki * ar)


@triton.jit
def _down_step(gr, gi, Gr, Gi, br, bi, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im, t, T, col, nmask, stride_t,
               AFFINE: tl.constexpr):
    """One step down of _bk_causal_bwd_kernel: the chunk summary's (AFFINE) or the gradients'."""
    if AFFINE:
        ur, ui, ar, ai = _affine_step(gr, gi, Gr, Gi, br, bi, ur, ui, ar, ai)
    else:
        ur, ui = _bwd_step(gr, gi, Gr, Gi, br, bi, ur, ui, ge_re, ge_im, gb_re, gb_im, t, T, col, nmask, stride_t)
    return ur, ui, ar, ai


@triton.jit
def _bk_causal_bwd_kernel(
    g_re, g_im, go_re, go_im, b_re, b_im,
    ge_re, ge_im, gb_re, gb_im, gs_re, gs_im,
    u_re, u_im, affine, T, N, stride_t, stride_n, stride_uc, CHUNK,
    AFFINE: tl.constexpr, HAS_CARRY: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Steps of chunk c = program_id(1) in reverse, from the carry u_{(c+1)·CHUNK} read at
    ``u + c·stride_uc`` (zero without HAS_CARRY: the sequential kernel is one chunk, CHUNK >= T).

    With AFFINE (the chunked scan's first pass) chunk c = program_id(1) + 1 (every chunk but the
    first) is instead summed up as an affine map of its carry, u_{c·CHUNK} = A u_{(c+1)·CHUNK} + B
    with A = Π conj(g_t)² conj(β_t) over the chunk and B the chunk's u from a zero carry, stored as
    (A, B) in 4 floats per chain at ``affine[c, n, :]``; nothing else is written. Rows past the end
    (last chunk only) read g = 0: u stays 0 there (u_T = 0) and A becomes 0, which is right because
    the last chunk's carry is 0."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    if AFFINE:
        c += 1
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    col = n.to(tl.int64) * stride_n
    if HAS_CARRY:  # u_{t+1}
        ur = tl.load(u_re + c * stride_uc + col, mask=nmask, other=0.0)
        ui = tl.load(u_im + c * stride_uc + col, mask=nmask, other=0.0)
    else:
        ur = tl.zeros([BLOCK_N], dtype=tl.float32)
        ui = tl.zeros([BLOCK_N], dtype=tl.float32)
    ar = tl.full([BLOCK_N], 1.0, tl.float32)  # A (AFFINE only; otherwise unchanged and compiled away)
    ai = tl.zeros([BLOCK_N], dtype=tl.float32)
    # rows past the end exist in the last chunk only (CHUNK is a multiple of UNROLL), whose carry is 0
    t_begin = c * CHUNK
    n_blocks = tl.cdiv(tl.minimum(t_begin + CHUNK, T) - t_begin, UNROLL)
    for k in tl.range(0, n_blocks, num_stages=STAGES):
        t0 = t_begin + (n_blocks - 1 - k) * UNROLL  # blocks from the end; rows inside from the top down
        if UNROLL > 4:
            gr7, gi7, Gr7, Gi7, br7, bi7 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 7, T, col, nmask, stride_t)
            gr6, gi6, Gr6, Gi6, br6, bi6 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 6, T, col, nmask, stride_t)
            gr5, gi5, Gr5, Gi5, br5, bi5 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 5, T, col, nmask, stride_t)
            gr4, gi4, Gr4, Gi4, br4, bi4 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 4, T, col, nmask, stride_t)
        if UNROLL > 2:
            gr3, gi3, Gr3, Gi3, br3, bi3 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 3, T, col, nmask, stride_t)
            gr2, gi2, Gr2, Gi2, br2, bi2 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 2, T, col, nmask, stride_t)
        if UNROLL > 1:
            gr1, gi1, Gr1, Gi1, br1, bi1 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0 + 1, T, col, nmask, stride_t)
        gr0, gi0, Gr0, Gi0, br0, bi0 = _bwd_load(g_re, g_im, go_re, go_im, b_re, b_im, t0, T, col, nmask, stride_t)
        if UNROLL > 4:
            ur, ui, ar, ai = _down_step(gr7, gi7, Gr7, Gi7, br7, bi7, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 7, T, col, nmask, stride_t, AFFINE)
            ur, ui, ar, ai = _down_step(gr6, gi6, Gr6, Gi6, br6, bi6, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 6, T, col, nmask, stride_t, AFFINE)
            ur, ui, ar, ai = _down_step(gr5, gi5, Gr5, Gi5, br5, bi5, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 5, T, col, nmask, stride_t, AFFINE)
            ur, ui, ar, ai = _down_step(gr4, gi4, Gr4, Gi4, br4, bi4, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 4, T, col, nmask, stride_t, AFFINE)
        if UNROLL > 2:
            ur, ui, ar, ai = _down_step(gr3, gi3, Gr3, Gi3, br3, bi3, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 3, T, col, nmask, stride_t, AFFINE)
            ur, ui, ar, ai = _down_step(gr2, gi2, Gr2, Gi2, br2, bi2, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 2, T, col, nmask, stride_t, AFFINE)
        if UNROLL > 1:
            ur, ui, ar, ai = _down_step(gr1, gi1, Gr1, Gi1, br1, bi1, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                        t0 + 1, T, col, nmask, stride_t, AFFINE)
        ur, ui, ar, ai = _down_step(gr0, gi0, Gr0, Gi0, br0, bi0, ur, ui, ar, ai, ge_re, ge_im, gb_re, gb_im,
                                    t0, T, col, nmask, stride_t, AFFINE)
    if AFFINE:
        out = affine + (c.to(tl.int64) * N + n) * 4
        tl.store(out + 0, ar, mask=nmask)
        tl.store(out + 1, ai, mask=nmask)
        tl.store(out + 2, ur, mask=nmask)
        tl.store(out + 3, ui, mask=nmask)
    else:
        first = nmask & (tl.zeros_like(n) + c == 0)  # a vector mask: see _step_offsets
        tl.store(gs_re + col, ur, mask=first)  # σ̄ = u_0
        tl.store(gs_im + col, ui, mask=first)


# ----------------------------------------------------------------------------------------------
# Chunked scan: per-chunk summaries in parallel, a short sequential scan over chunks per chain,
# then the kernels above replay every chunk from its true start in parallel
# ----------------------------------------------------------------------------------------------


@triton.jit
def _mobius_step(er, ei, br, bi, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i):
    """P ← M_t P / max|·| with M_t = [[0, β_t], [−1, e_t]]: rows (β p₁, e p₁ − p₀), scaled so that
    the largest real or imaginary part of an entry is 1 (only the projective ratio is used)."""
    n0r = br * p10r - bi * p10i
    n0i = br * p10i + bi * p10r
    n1r = br * p11r - bi * p11i
    n1i = br * p11i + bi * p11r
    d0r = er * p10r - ei * p10i - p00r
    d0i = er * p10i + ei * p10r - p00i
    d1r = er * p11r - ei * p11i - p01r
    d1i = er * p11i + ei * p11r - p01i
    m = tl.maximum(tl.maximum(tl.maximum(tl.abs(n0r), tl.abs(n0i)), tl.maximum(tl.abs(n1r), tl.abs(n1i))),
                   tl.maximum(tl.maximum(tl.abs(d0r), tl.abs(d0i)), tl.maximum(tl.abs(d1r), tl.abs(d1i))))
    inv = 1.0 / m
    return n0r * inv, n0i * inv, n1r * inv, n1i * inv, d0r * inv, d0i * inv, d1r * inv, d1i * inv


@triton.jit
def _map_load(e_re, e_im, b_re, b_im, t, col, nmask, stride_t):
    """e_t and β_t of a full chunk (t < T − 1: no mask along t); padding chains read e = 1, β = 0,
    which keep P finite."""
    return _load_e_beta(e_re, e_im, b_re, b_im, tl.cast(t, tl.int64) * stride_t + col, nmask, nmask)


@triton.jit
def _bk_fwd_maps_kernel(
    e_re, e_im, b_re, b_im, maps, N, stride_t, stride_n, CHUNK,
    UNROLL: tl.constexpr, STAGES: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Möbius map s_{(c+1)·CHUNK} = (p₀₀ s + p₀₁)/(p₁₀ s + p₁₁) of s_{c·CHUNK} for chunk c =
    program_id(1) (every chunk but the last: all full), stored as 8 floats per chain at
    ``maps[c, n, :]``. Loads are issued UNROLL steps at a time, as in the forward kernel."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    col = n.to(tl.int64) * stride_n
    one = tl.full([BLOCK_N], 1.0, tl.float32)
    zero = tl.zeros([BLOCK_N], dtype=tl.float32)
    p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = one, zero, zero, zero, zero, zero, one, zero
    t_begin = c * CHUNK
    for t0 in tl.range(t_begin, t_begin + CHUNK, UNROLL, num_stages=STAGES):
        er0, ei0, br0, bi0 = _map_load(e_re, e_im, b_re, b_im, t0, col, nmask, stride_t)
        if UNROLL > 1:
            er1, ei1, br1, bi1 = _map_load(e_re, e_im, b_re, b_im, t0 + 1, col, nmask, stride_t)
        if UNROLL > 2:
            er2, ei2, br2, bi2 = _map_load(e_re, e_im, b_re, b_im, t0 + 2, col, nmask, stride_t)
            er3, ei3, br3, bi3 = _map_load(e_re, e_im, b_re, b_im, t0 + 3, col, nmask, stride_t)
        if UNROLL > 4:
            er4, ei4, br4, bi4 = _map_load(e_re, e_im, b_re, b_im, t0 + 4, col, nmask, stride_t)
            er5, ei5, br5, bi5 = _map_load(e_re, e_im, b_re, b_im, t0 + 5, col, nmask, stride_t)
            er6, ei6, br6, bi6 = _map_load(e_re, e_im, b_re, b_im, t0 + 6, col, nmask, stride_t)
            er7, ei7, br7, bi7 = _map_load(e_re, e_im, b_re, b_im, t0 + 7, col, nmask, stride_t)
        p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
            er0, ei0, br0, bi0, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
        if UNROLL > 1:
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er1, ei1, br1, bi1, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
        if UNROLL > 2:
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er2, ei2, br2, bi2, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er3, ei3, br3, bi3, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
        if UNROLL > 4:
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er4, ei4, br4, bi4, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er5, ei5, br5, bi5, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er6, ei6, br6, bi6, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
            p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i = _mobius_step(
                er7, ei7, br7, bi7, p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i)
    out = maps + (c.to(tl.int64) * N + n) * 8
    tl.store(out + 0, p00r, mask=nmask)
    tl.store(out + 1, p00i, mask=nmask)
    tl.store(out + 2, p01r, mask=nmask)
    tl.store(out + 3, p01i, mask=nmask)
    tl.store(out + 4, p10r, mask=nmask)
    tl.store(out + 5, p10i, mask=nmask)
    tl.store(out + 6, p11r, mask=nmask)
    tl.store(out + 7, p11i, mask=nmask)


@triton.jit
def _chunk_map_load(maps, c, n_maps, N, n, nmask):
    """Map c (8 floats per chain); the identity past the last map (c >= n_maps)."""
    m = nmask & (tl.zeros_like(n) + c < n_maps)  # a vector mask: see _step_offsets
    p = maps + (tl.cast(c, tl.int64) * N + n) * 8
    return (tl.load(p + 0, mask=m, other=1.0), tl.load(p + 1, mask=m, other=0.0),
            tl.load(p + 2, mask=m, other=0.0), tl.load(p + 3, mask=m, other=0.0),
            tl.load(p + 4, mask=m, other=0.0), tl.load(p + 5, mask=m, other=0.0),
            tl.load(p + 6, mask=m, other=1.0), tl.load(p + 7, mask=m, other=0.0))


@triton.jit
def _chunk_map_apply(p00r, p00i, p01r, p01i, p10r, p10i, p11r, p11i, sr, si, starts, c, n_maps, N, n, nmask):
    """s ← (p₀₀ s + p₀₁)/(p₁₀ s + p₁₁) with map c, stored as the start of chunk c + 1."""
    nr = p00r * sr - p00i * si + p01r
    ni = p00r * si + p00i * sr + p01i
    dr = p10r * sr - p10i * si + p11r
    di = p10r * si + p10i * sr + p11i
    inv = 1.0 / (dr * dr + di * di)
    sr, si = (nr * dr + ni * di) * inv, (ni * dr - nr * di) * inv
    q = starts + ((tl.cast(c, tl.int64) + 1) * N + n) * 2
    m = nmask & (tl.zeros_like(n) + c < n_maps)
    tl.store(q, sr, mask=m)
    tl.store(q + 1, si, mask=m)
    return sr, si


@triton.jit
def _bk_fwd_scan_kernel(
    maps, s_re, s_im, starts, N, n_chunks,
    HAS_SIGMA: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """starts[c, n] = s_{c·CHUNK}: σ (or 0) for c = 0, then each chunk's map applied in turn. The
    maps' loads are issued UNROLL chunks at a time (they do not depend on s)."""
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    if HAS_SIGMA:
        sr = tl.load(s_re + 2 * n, mask=nmask, other=0.0)
        si = tl.load(s_im + 2 * n, mask=nmask, other=0.0)
    else:
        sr = tl.zeros([BLOCK_N], dtype=tl.float32)
        si = tl.zeros([BLOCK_N], dtype=tl.float32)
    tl.store(starts + 2 * n, sr, mask=nmask)
    tl.store(starts + 2 * n + 1, si, mask=nmask)
    n_maps = n_chunks - 1
    for c0 in tl.range(0, n_maps, UNROLL, num_stages=STAGES):
        a00r, a00i, a01r, a01i, a10r, a10i, a11r, a11i = _chunk_map_load(maps, c0, n_maps, N, n, nmask)
        if UNROLL > 1:
            b00r, b00i, b01r, b01i, b10r, b10i, b11r, b11i = _chunk_map_load(maps, c0 + 1, n_maps, N, n, nmask)
        if UNROLL > 2:
            c00r, c00i, c01r, c01i, c10r, c10i, c11r, c11i = _chunk_map_load(maps, c0 + 2, n_maps, N, n, nmask)
            d00r, d00i, d01r, d01i, d10r, d10i, d11r, d11i = _chunk_map_load(maps, c0 + 3, n_maps, N, n, nmask)
        sr, si = _chunk_map_apply(a00r, a00i, a01r, a01i, a10r, a10i, a11r, a11i, sr, si, starts, c0, n_maps,
                                  N, n, nmask)
        if UNROLL > 1:
            sr, si = _chunk_map_apply(b00r, b00i, b01r, b01i, b10r, b10i, b11r, b11i, sr, si, starts, c0 + 1, n_maps,
                                      N, n, nmask)
        if UNROLL > 2:
            sr, si = _chunk_map_apply(c00r, c00i, c01r, c01i, c10r, c10i, c11r, c11i, sr, si, starts, c0 + 2, n_maps,
                                      N, n, nmask)
            sr, si = _chunk_map_apply(d00r, d00i, d01r, d01i, d10r, d10i, d11r, d11i, sr, si, starts, c0 + 3, n_maps,
                                      N, n, nmask)


@triton.jit
def _chunk_affine_load(affine, c, N, n, nmask):
    """(A, B) of chunk c; the identity (1, 0) for c < 1 (chunk 0 has no summary)."""
    m = nmask & (tl.zeros_like(n) + c >= 1)  # a vector mask: see _step_offsets
    p = affine + (tl.cast(c, tl.int64) * N + n) * 4
    return (tl.load(p + 0, mask=m, other=1.0), tl.load(p + 1, mask=m, other=0.0),
            tl.load(p + 2, mask=m, other=0.0), tl.load(p + 3, mask=m, other=0.0))


@triton.jit
def _chunk_affine_apply(ar, ai, br, bi, ur, ui, carry, c, N, n, nmask):
    """u ← A u + B with chunk c's map, stored as the carry into chunk c − 1."""
    ur, ui = ar * ur - ai * ui + br, ar * ui + ai * ur + bi
    q = carry + ((tl.cast(c, tl.int64) - 1) * N + n) * 2
    m = nmask & (tl.zeros_like(n) + c >= 1)
    tl.store(q, ur, mask=m)
    tl.store(q + 1, ui, mask=m)
    return ur, ui


@triton.jit
def _bk_bwd_scan_kernel(affine, carry, N, n_chunks, UNROLL: tl.constexpr, STAGES: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    """carry[c, n] = u_{(c+1)·CHUNK}: 0 for the last chunk, then the chunks' affine maps applied in
    reverse, their loads issued UNROLL chunks at a time."""
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    ur = tl.zeros([BLOCK_N], dtype=tl.float32)
    ui = tl.zeros([BLOCK_N], dtype=tl.float32)
    last = carry + ((n_chunks - 1) * N + n).to(tl.int64) * 2
    tl.store(last, ur, mask=nmask)
    tl.store(last + 1, ui, mask=nmask)
    for k in tl.range(0, n_chunks - 1, UNROLL, num_stages=STAGES):
        c = n_chunks - 1 - k  # chunks c, c − 1, ... down to 1 (below: identity, not stored)
        a0r, a0i, b0r, b0i = _chunk_affine_load(affine, c, N, n, nmask)
        if UNROLL > 1:
            a1r, a1i, b1r, b1i = _chunk_affine_load(affine, c - 1, N, n, nmask)
        if UNROLL > 2:
            a2r, a2i, b2r, b2i = _chunk_affine_load(affine, c - 2, N, n, nmask)
            a3r, a3i, b3r, b3i = _chunk_affine_load(affine, c - 3, N, n, nmask)
        ur, ui = _chunk_affine_apply(a0r, a0i, b0r, b0i, ur, ui, carry, c, N, n, nmask)
        if UNROLL > 1:
            ur, ui = _chunk_affine_apply(a1r, a1i, b1r, b1i, ur, ui, carry, c - 1, N, n, nmask)
        if UNROLL > 2:
            ur, ui = _chunk_affine_apply(a2r, a2i, b2r, b2i, ur, ui, carry, c - 2, N, n, nmask)
            ur, ui = _chunk_affine_apply(a3r, a3i, b3r, b3i, ur, ui, carry, c - 3, N, n, nmask)


# ----------------------------------------------------------------------------------------------
# Launchers: (..., 2) float32 tensors (torch.view_as_real of complex64) in and out
# ----------------------------------------------------------------------------------------------


def _parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """The real and imaginary planes of a (..., 2) float32 tensor, as strided views (no copy)."""
    return x[..., 0], x[..., 1]


def _forward_launch(e: Tensor, beta: Tensor, sigma: Tensor | None, unroll: int, stages: int, block_n: int,
                    num_warps: int, chunk: int) -> Tensor:
    """g (T, N, 2) from e (T, N, 2), beta (T-1, N, 2) and sigma (N, 2) or None; ``chunk`` 0: the
    sequential kernel, else the chunked scan with chunks of that many steps."""
    T, N, _ = e.shape
    e = e.contiguous()
    b = beta.contiguous() if T > 1 else e  # a placeholder pointer, never read when T == 1
    g = torch.empty_like(e)
    n_blocks = triton.cdiv(N, block_n)
    n_chunks = 1 if chunk == 0 else triton.cdiv(T, chunk)
    if n_chunks == 1:
        starts = sigma.contiguous() if sigma is not None else e[0]  # placeholder, never read without sigma
    else:
        maps = e.new_empty(n_chunks - 1, N, 8)
        _bk_fwd_maps_kernel[(n_blocks, n_chunks - 1)](
            *_parts(e), *_parts(b), maps, N, 2 * N, 2, chunk,
            UNROLL=unroll, STAGES=stages, BLOCK_N=block_n, num_warps=num_warps,
        )
        starts = e.new_empty(n_chunks, N, 2)
        s = sigma.contiguous() if sigma is not None else e[0]
        _bk_fwd_scan_kernel[(n_blocks,)](
            maps, *_parts(s), starts, N, n_chunks,
            HAS_SIGMA=sigma is not None, UNROLL=SCAN_UNROLL, STAGES=stages, BLOCK_N=block_n, num_warps=num_warps,
        )
    _bk_causal_fwd_kernel[(n_blocks, n_chunks)](
        *_parts(e), *_parts(b), *_parts(starts), *_parts(g),
        T, N, 2 * N, 2, 2 * N, T if n_chunks == 1 else chunk,
        HAS_SIGMA=sigma is not None or n_chunks > 1, UNROLL=unroll, STAGES=stages, BLOCK_N=block_n,
        num_warps=num_warps,
    )
    return g


def _backward_launch(g: Tensor, grad_g: Tensor, beta: Tensor, unroll: int, stages: int, block_n: int,
                     num_warps: int, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (T, N, 2), (T-1, N, 2), (N, 2) of e, beta and sigma from g, its gradient and beta.
    σ̄ is always computed (one store per chain), so the outputs are the same with or without sigma."""
    T, N, _ = g.shape
    grad_g = grad_g.contiguous()
    b = beta.contiguous() if T > 1 else g  # placeholder, never read when T == 1
    grad_e = torch.empty_like(g)
    grad_beta = g.new_empty(T - 1, N, 2)
    gb = grad_beta if T > 1 else g  # placeholder, never written when T == 1
    grad_sigma = g.new_empty(N, 2)
    n_blocks = triton.cdiv(N, block_n)
    n_chunks = 1 if chunk == 0 else triton.cdiv(T, chunk)
    carry = g  # placeholder, never read with one chunk
    if n_chunks > 1:
        affine = g.new_empty(n_chunks, N, 4)  # row 0 unused: chunk 0's carry-out is σ̄, from the replay
        _bk_causal_bwd_kernel[(n_blocks, n_chunks - 1)](  # the chunk summaries: writes affine only
            *_parts(g), *_parts(grad_g), *_parts(b), *(g,) * 8, affine, T, N, 2 * N, 2, 0, chunk,
            AFFINE=True, HAS_CARRY=False, UNROLL=unroll, STAGES=stages, BLOCK_N=block_n, num_warps=num_warps,
        )
        carry = g.new_empty(n_chunks, N, 2)
        _bk_bwd_scan_kernel[(n_blocks,)](affine, carry, N, n_chunks, UNROLL=SCAN_UNROLL, STAGES=stages,
                                         BLOCK_N=block_n, num_warps=num_warps)
    _bk_causal_bwd_kernel[(n_blocks, n_chunks)](
        *_parts(g), *_parts(grad_g), *_parts(b),
        *_parts(grad_e), *_parts(gb), *_parts(grad_sigma),
        *_parts(carry), g, T, N, 2 * N, 2, 2 * N, T if n_chunks == 1 else chunk,
        AFFINE=False, HAS_CARRY=n_chunks > 1, UNROLL=unroll, STAGES=stages, BLOCK_N=block_n, num_warps=num_warps,
    )
    return grad_e, grad_beta, grad_sigma


# ----------------------------------------------------------------------------------------------
# Custom ops (what torch.compile traces) and autograd
# ----------------------------------------------------------------------------------------------


def _setup_context(ctx, inputs, g):
    ctx.save_for_backward(g, inputs.beta)
    ctx.has_sigma = inputs.sigma is not None
    ctx.launch = (inputs.unroll, inputs.stages, inputs.block_n, inputs.num_warps, inputs.chunk)


def _gradients(ctx, backward, grad_g):
    """Gradients of e, beta and sigma from that of g; ``backward`` is the custom op or its launcher."""
    g, beta = ctx.saved_tensors
    grad_e, grad_beta, grad_sigma = backward(g, grad_g, beta, *ctx.launch)
    return dict(e=grad_e, beta=grad_beta, sigma=grad_sigma if ctx.has_sigma else None)


def _backward_fake(g, grad_g, beta, *launch):
    T, N, _ = g.shape
    return g.new_empty(g.shape), g.new_empty(T - 1, N, 2), g.new_empty(N, 2)


_bk_causal = TritonOp("bk_causal", _forward_launch, _backward_launch,
                      forward_fake=lambda e, beta, sigma, *launch: e.new_empty(e.shape),
                      backward_fake=_backward_fake, setup_context=_setup_context, gradients=_gradients)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def scan_chunk(T: int, N: int) -> int:
    """The scan chunk length for T steps of N chains: 0 (the sequential kernel) when the N chains
    alone fill the GPU (N >= SEQUENTIAL_MIN_CHAINS) or T < SCAN_MIN_T, else the least power of two
    >= sqrt(T/2), clamped to [CHUNK_MIN, CHUNK_MAX]. Shapes only, so deterministic.

    Cost model (the chunk length; timed on an H100, see the module docstring): a step of one chain
    is latency-bound at τ ≈ 100 ns (measured for the sequential kernel) as long as the programs fit
    on the GPU at once, and a step of the scans over chunks (loads issued SCAN_UNROLL at a time, one
    complex division or product) costs about as much, so the chunked time is ≈ 2·CHUNK·τ (chunk
    maps + replay) + (T/CHUNK)·τ, least at CHUNK = sqrt(T/2); the sequential time is T·τ. At
    (N, T) = (32, 8192) that is 64 steps: 128 chunks, one warp each on the 132 SMs. With
    N >= 4·132·32 chains the sequential kernel already has four warps per SM and, at 24 B per step
    and chain, is near HBM bandwidth; there the chunked scan's extra pass (≈ 1.7x the traffic) would
    be slower. Below SCAN_MIN_T steps the chunked scan's fixed cost eats the gain: measured on an
    H100, its forward + backward took ~0.85-0.9 ms at every T up to 32768 (forward ~0.2 ms), the
    sequential kernel's 0.58, 1.70 and 6.75 ms at T 1024, 8192, 32768 (forward 0.11, 0.80, 3.17).
    Interpolated linearly, the two meet near T ≈ 2900 (forward ≈ 1950); the crossover itself was
    not timed."""
    if N >= SEQUENTIAL_MIN_CHAINS or T < SCAN_MIN_T:
        return 0
    chunk = CHUNK_MIN  # doubled by comparisons only, so a symbolic T (torch.compile, dynamic) works
    while chunk < CHUNK_MAX and 2 * chunk * chunk < T:
        chunk *= 2
    return chunk


def bk_causal_triton_real(e: Tensor, beta: Tensor, sigma: Tensor | None = None, unroll: int | None = None,
                          stages: int | None = None, block_n: int | None = None,
                          num_warps: int | None = None, chunk: int | None = None) -> Tensor:
    """Causal g (T, N, 2) for time-major e (T, N, 2), beta (T-1, N, 2), sigma (N, 2) or None: float32
    tensors whose last dim holds (re, im), the ``torch.view_as_real`` layout the kernels read. A caller
    that builds these parts itself (``BKCore``) keeps complex tensors out of its graph, which inductor
    cannot generate code for (each complex op would run as a separate eager kernel).
    Launch parameters left as None take the module's UNROLL, STAGES, BLOCK_N and NUM_WARPS, and
    ``chunk`` the rule :func:`scan_chunk`; ``chunk=0`` forces the sequential kernel, a positive
    multiple of ``unroll`` the chunked scan with chunks of that many steps."""
    for name, x in (("e", e), ("beta", beta), ("sigma", sigma)):
        if x is not None and (x.dtype != torch.float32 or x.shape[-1:] != (2,)):
            raise TypeError("bk_resolvent (Triton): computes in float32, needs (..., 2) float32 (re, im) "
                            f"tensors, got {name} {x.dtype} of shape {tuple(x.shape)}")
    unroll = UNROLL if unroll is None else unroll
    if unroll not in (1, 2, 4, 8):
        raise ValueError(f"bk_causal_triton: unroll must be 1, 2, 4 or 8, got {unroll}")
    chunk = scan_chunk(e.shape[0], e.shape[1]) if chunk is None else chunk
    if chunk < 0 or chunk % unroll:
        raise ValueError(f"bk_causal_triton: chunk must be 0 (sequential) or a positive multiple of unroll "
                         f"({unroll}), got {chunk}")
    return _bk_causal(e, beta, sigma, unroll, STAGES if stages is None else stages,
              BLOCK_N if block_n is None else block_n, NUM_WARPS if num_warps is None else num_warps, chunk)


def bk_causal_triton(e: Tensor, beta: Tensor, sigma: Tensor | None = None, **launch) -> Tensor:
    """Causal g for time-major e (T, N), beta (T-1, N), sigma (N,) or None, all complex64: the complex
    face of :func:`bk_causal_triton_real` (same launch parameters)."""
    for name, x in (("e", e), ("beta", beta), ("sigma", sigma)):
        if x is not None and x.dtype != torch.complex64:
            raise TypeError(f"bk_resolvent (Triton): computes in float32, needs complex64, got {name} {x.dtype}")
    real = lambda x: None if x is None else torch.view_as_real(x.contiguous())  # noqa: E731
    return torch.view_as_complex(bk_causal_triton_real(real(e), real(beta), real(sigma), **launch))
