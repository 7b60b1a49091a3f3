"""Triton forward and backward of the dissipative Hebbian memory with consolidation (DESIGN §5).

Computes what :func:`breath.ops.dissipative_memory.dissipative_memory` computes (same
``MemoryState``, same per-boundary stats, same decisions) with fp32 accumulation and an fp32 state;
q, k, v may be bf16, fp16 or fp32. Every product is fp32-accurate (see _dot and the note above
it for why). Per batch row and head, with the adjustments (gm, ga, em) pending since the last
boundary and η_t = η·em:

    ℓ_t = −(Γ_t·gm + ga)          b_t = Σ_{s≤t} ℓ_s (inclusive, local to the chunk)
    o_t = e^{b_t} S0ᵀ q_t + Σ_{s≤t} e^{b_t−b_s} η_t (q_t·k_s) v_s
    S_L = e^{b_L} S0 + Σ_s w_s k_s v_sᵀ,      w_s = η_t e^{b_L−b_s}
    log_decay_L = log_decay0 + b_L

and at an absolute boundary the consolidation of :mod:`breath.ops.consolidation` (Lyapunov rule,
SNR by power iteration on SᵀS started from the state's vector (warm) or the fixed start vector
(cold), resonance projection S ← S − Q[(1−M) ⊙ QᵀS], fresh pending adjustments).

Chunks are laid on the absolute grid: chunk i of a call holds the tokens t = i·C − off + j
(j < C, off = pos mod C) that lie in [0, T). Absent tokens load as q = k = v = 0 and ℓ = 0, so
they write nothing and leave b unchanged: the partial first segment and the ragged tail need no
special case, and a boundary follows chunk i exactly when (i+1)·C ≤ off + T.

Kernels. The consolidation needs the whole of S, so the state is carried by one program per
(batch, head) walking the chunks in order (without consolidation, ``cfg.enabled`` False, the chain
is elementwise in S and each head's is split over programs of ``LaunchSettings.state_rows`` rows);
everything that does not feed the recurrence runs in kernels parallel over (chunk, head) pairs. (Computing o and the token gradients inside the
sequential kernels measured 1.2–2.4× slower on an H100: more live tiles, register spills, and the
chain of chunks gets longer; see benchmarks/notes_memory_kernel.md.)

* ``_fwd_update_kernel`` computes, per (chunk, head), the chunk's state update Σ_s w_s k_s v_sᵀ,
  and b_L under each of the four pending adjustments (gm, ga) a boundary can
  set (chunk 0: under those carried in; without consolidation, every chunk under those, one slot),
  so the sequential chain never loads k and v.
* ``_fwd_state_kernel`` carries S (d×d, fp32) on chip: per chunk S ← e^{b_L} S + em·U from the slot
  the pending adjustments select, then the consolidation. It saves S at every chunk start, the
  pending adjustments of every chunk and the keep mask of every boundary (O(T/C·d²) per head, what
  the other kernels and the backward need), writes the stats and the new state.
* ``_fwd_out_kernel`` computes o of one (chunk, head) from the saved chunk-start state.
* ``_bwd_reads_kernel`` computes the chunk's term R = Σ_t e^{b_t} q_t do_tᵀ of the dS recurrence
  and its decay e^{b_L}, per (chunk, head).
* ``_bwd_state_kernel`` then walks the chunks in reverse with dS on chip. With the decisions held
  fixed (their derivative is zero almost everywhere), the projection is the linear map
  Π = I − Q(1−M)Qᵀ, symmetric, so dS_L = Π dS'; then dS0 = e^{b_L} dS_L + R. The chain thus holds
  only an axpy per chunk (and the projection where modes were dropped): the loads of q and dO and
  the C×d×d product run in the (chunk, head)-parallel kernel. It saves dS_L of every chunk and
  returns the gradient of the incoming S.
* ``_bwd_query_kernel`` computes dq and part of ∂b of one (chunk, head) from S0;
  ``_bwd_key_kernel`` then dk, dv, the rest of ∂b and dΓ from dS_L. (One kernel computing
  dq, dk, dv and dΓ held ~10 live 64×64 fp32 tiles and spilled 540–610 registers; H200, 2026-11-30.)

Token gradients of one chunk (D_ts = e^{b_t−b_s} for s ≤ t, 0 otherwise; A = (QKᵀ)⊙D·η,
B = (dO Vᵀ)⊙D·η, G = A ⊙ (dO Vᵀ), h_s = w_s k_sᵀ dS_L v_s):

    dq = e^{b} ⊙ (dO S0ᵀ) + B K
    dk = Bᵀ Q + w ⊙ (V dS_Lᵀ)
    dv = Aᵀ dO + w ⊙ (K dS_L)
    ∂b_t = e^{b_t} q_t·(S0 do_t) + Σ_s G_ts − Σ_s G_st − h_t + [t = L]·(e^{b_L}⟨dS_L, S0⟩ + Σ_s h_s)
    dΓ_t = −gm · Σ_{u≥t} ∂b_u

The ops are registered with ``torch.library.custom_op`` (``breath::memory_fwd``, ``breath::memory_bwd``)
with fake implementations and ``register_autograd``, so ``torch.compile`` traces through them as one
node per call; eager mode calls an ``autograd.Function`` running the same launchers, which costs less
host time per call than the custom op's dispatch (both wired by :class:`breath.ops.custom.TritonOp`).
The consolidation config crosses the op as a list of floats built and read by field name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from breath.ops.backend import MEMORY_KERNEL_CHUNKS, MEMORY_KERNEL_HEAD_DIMS
from breath.ops.consolidation import ConsolidationConfig
from breath.ops.custom import TritonOp
from breath.ops.dissipative_memory import MemoryState

# d = 128 is not supported: the fp32-accurate d×d products of the state kernel (SᵀS, QᵀS) stage
# four 128×128 fp32 operand tiles, 256 KB of shared memory, over the H100's 227 KB per block.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Every product is fp32-accurate. The state path (S update, resonance projection, the power
# iteration's SᵀS, the backward's dS recurrence) needs it because consolidation takes discrete
# decisions on S, and tf32 errors there would flip some. o and the token gradients need it too: with
# one tf32 product (~1e-3 per op) the gradients of a 6-layer base model reaching the embedding were
# off by 5x against the reference (H100, 2026-11-24; 1 layer: 2e-3). An fp32-accurate product costs
# three tf32 products ("tf32x3"), or fewer where an operand came as bf16/fp16 and so is exactly
# representable in tf32 (see _dot). Under the interpreter every product is fp32.

# Packed per-head scalars of the state (in and out), in this order; the kernels address them by
# the offsets below, looked up by name.
SCALARS = ("gamma_mult", "gamma_add", "eta_mult", "energy_start", "log_decay")
_NSCAL = tl.constexpr(len(SCALARS))
_GM, _GA, _EM, _E0, _LOGD = (tl.constexpr(SCALARS.index(name))
                             for name in ("gamma_mult", "gamma_add", "eta_mult", "energy_start", "log_decay"))


def _pack_scalars(state: MemoryState) -> Tensor:
    """(B, H, len(SCALARS)) fp32: the state's scalars, by name."""
    return torch.stack([getattr(state, name) for name in SCALARS], -1).float()


def _unpack_scalars(scal: Tensor) -> dict[str, Tensor]:
    return dict(zip(SCALARS, scal.unbind(-1)))


# The config's fields and their types (int, float or bool); read once (Dynamo cannot trace fields()).
_CONFIG_TYPES = {f.name: type(f.default) for f in fields(ConsolidationConfig)}


def _config_values(cfg: ConsolidationConfig) -> list[float]:
    """The config as the custom op's flat ``float[]`` argument (a dataclass is no schema type), by
    field name; :func:`_config` is its inverse."""
    return [float(getattr(cfg, name)) for name in _CONFIG_TYPES]


def _config(values: list[float]) -> ConsolidationConfig:
    return ConsolidationConfig(**{name: kind(value) for (name, kind), value in zip(_CONFIG_TYPES.items(), values)})


# ----------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _load_rows(base, t, stride_t, valid, cols):
    """Rows t of a (T, D) slab as fp32; absent rows are 0."""
    ptrs = base + t[:, None] * stride_t + cols[None, :]
    return tl.load(ptrs, mask=valid[:, None], other=0.0).to(tl.float32)


@triton.jit
def _chunk_program(H, T, off, C: tl.constexpr):
    """Where a kernel parallel over (chunk i = program 0, batch·head bh = program 1) works: i, bh, the
    batch row bi and head hi, the chunk's positions t on the absolute grid and their mask."""
    i = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    t = i * C - off + tl.arange(0, C)
    return i, bh, bh // H, bh % H, t, (t >= 0) & (t < T)


@triton.jit
def _state_tile(cols, D: tl.constexpr, CONSOLIDATE: tl.constexpr, ROWS: tl.constexpr):
    """Offsets of the part of a d×d state a sequential program carries: all of it for the
    consolidation (one index tensor: a second one live spilled), else ROWS rows (program 1)."""
    if CONSOLIDATE:
        return cols[:, None] * D + cols[None, :]
    else:
        return (tl.program_id(1) * ROWS + tl.arange(0, ROWS))[:, None] * D + cols[None, :]


@triton.jit
def _store_pending(ptr, gm, ga, em, first, CONSOLIDATE: tl.constexpr):
    """Store the pending adjustments (gm, ga, em) at ptr: one program a head stores them (without
    consolidation, program 1 == 0 of the split chain; with it, the only one: no branch)."""
    if CONSOLIDATE:
        tl.store(ptr + 0, gm)
        tl.store(ptr + 1, ga)
        tl.store(ptr + 2, em)
    else:
        if first:
            tl.store(ptr + 0, gm)
            tl.store(ptr + 1, ga)
            tl.store(ptr + 2, em)


@triton.jit
def _log_decay(g_base, t, stride_t, valid, gm, ga, C: tl.constexpr):
    """Inclusive cumulative log-decay b (C,) of a chunk and its last value b_L (ℓ = 0 on absent tokens)."""
    g = tl.load(g_base + t * stride_t, mask=valid, other=0.0).to(tl.float32)
    b = tl.cumsum(tl.where(valid, -(g * gm + ga), 0.0), 0)
    b_last = tl.sum(tl.where(tl.arange(0, C) == C - 1, b, 0.0), 0)
    return b, b_last


@triton.jit
def _decay_mask(b, C: tl.constexpr):
    """D_ts = e^{b_t − b_s} for s ≤ t, else 0; only non-positive exponents are evaluated."""
    rows = tl.arange(0, C)
    causal = rows[:, None] >= rows[None, :]
    return tl.exp(tl.where(causal, b[:, None] - b[None, :], float("-inf")))


@triton.jit
def _decay_mask_t(b, C: tl.constexpr):
    """Dᵀ, built directly in the key-major orientation (row s, column t)."""
    rows = tl.arange(0, C)
    causal = rows[:, None] <= rows[None, :]
    return tl.exp(tl.where(causal, b[None, :] - b[:, None], float("-inf")))


@triton.jit
def _tf32_split(x):
    """x = hi + lo with hi exactly representable in tf32 (10 mantissa bits): hi·y + lo·y on tf32
    matrix units is fp32-accurate when y is itself tf32-exact (bf16/fp16 data)."""
    hi = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def _dot(a, b, A_EXACT: tl.constexpr, B_EXACT: tl.constexpr):
    """a @ b at fp32 accuracy on the tf32 matrix units. tf32x3 computes a_hi·b_hi + a_hi·b_lo +
    a_lo·b_hi; an operand flagged exact (it came as bf16/fp16: its low half is zero) drops its terms,
    so the product costs 1, 2 or 3 tf32 products and splits only the inexact operand."""
    if A_EXACT and B_EXACT:
        return tl.dot(a, b, input_precision="tf32")
    elif B_EXACT:
        a_hi, a_lo = _tf32_split(a)
        return tl.dot(a_lo, b, acc=tl.dot(a_hi, b, input_precision="tf32"), input_precision="tf32")
    elif A_EXACT:
        b_hi, b_lo = _tf32_split(b)
        return tl.dot(a, b_lo, acc=tl.dot(a, b_hi, input_precision="tf32"), input_precision="tf32")
    else:
        return tl.dot(a, b, input_precision="tf32x3")


@triton.jit
def _chunk_out(q, k, v, S0, b, eta_t, C: tl.constexpr, QX: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr):
    """o = ((Q Kᵀ) ⊙ D · η) V + e^{b} ⊙ (Q S0) for one chunk (QX, KX, VX: q, k, v tf32-exact)."""
    A = _dot(q, tl.trans(k), QX, KX) * (_decay_mask(b, C) * eta_t)
    o = _dot(A, v, False, VX)
    return o + tl.exp(b)[:, None] * _dot(q, S0, QX, False)


@triton.jit
def _start_vector(D: tl.constexpr):
    """consolidation._start_vector in-kernel: x_j = 1/2 + frac(j·φ⁻¹), j = 1..D, normalised in fp64."""
    inv_phi = (tl.sqrt(tl.full((), 5.0, tl.float64)) - 1.0) / 2.0
    j = (tl.arange(0, D) + 1).to(tl.float64) * inv_phi
    x = 0.5 + (j - tl.floor(j))
    return (x / tl.sqrt(tl.sum(x * x, 0))).to(tl.float32)


@triton.jit
def _top_singular_value(S, fro, x, ITERS: tl.constexpr):
    """consolidation.power_iteration: ITERS steps of x ← SnᵀSn x / ‖·‖ (Sn = S/‖S‖_F) from the unit
    vector x; returns ‖S x‖ and the final unit x.

    A step is two mat-vecs on Sn held in registers, as in the reference: Sn x reduces along the rows
    and Snᵀ(·) along the columns, so x keeps its register layout. (Forming M = SnᵀSn once and taking
    one mat-vec a step kept one more 64×64 tile live, spilled 200 bytes a thread at d 64 and was
    slower on an H100 at every timed shape: benchmarks/notes_memory_kernel.md, v7.)
    x is renormalised every 4 steps and after the last: the direction is the same as with a
    renormalisation per step (each is a positive scale), and nothing can underflow in between,
    since ‖SnᵀSn x‖ ≥ σ_max(Sn)²·|x·u₁| with σ_max(Sn)² ≥ 1/d. A zero result keeps the last unit x,
    as in the reference (SnᵀSn is positive semi-definite: its k-th power maps x to 0 exactly when
    Sn x = 0)."""
    tiny = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny, as in the reference's clamps
    Sn = S / tl.maximum(fro, tiny)
    unit = x
    for it in tl.static_range(ITERS):
        x = tl.sum(Sn * tl.sum(Sn * x[None, :], 1)[:, None], 0)
        if ((it + 1) % 4 == 0) | (it + 1 == ITERS):
            norm = tl.sqrt(tl.sum(x * x, 0))
            x = tl.where(norm > 0, x / tl.maximum(norm, tiny), unit)
            unit = x
    sx = tl.sum(S * x[None, :], 1)
    return tl.sqrt(tl.sum(sx * sx, 0)), x


@triton.jit
def _project_out(X, basis_ptr, keep, cols, D: tl.constexpr):
    """X − Q[(1 − M) ⊙ QᵀX]: the resonance projection (symmetric, so also its own adjoint)."""
    Qb = tl.load(basis_ptr + cols[:, None] * D + cols[None, :])
    P = _dot(tl.trans(Qb), X, False, False)
    return X - _dot(Qb, tl.where(keep[:, None], 0.0, P), False, False)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _fwd_update_kernel(
    k_ptr, v_ptr, g_ptr, scal_in_ptr, upd_ptr, upd_scal_ptr,
    sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sg_b, sg_h, sg_t,
    H, T, NT, off, eta, gamma_boost, lyapunov_step,
    D: tl.constexpr, C: tl.constexpr, VX: tl.constexpr, SLOTS: tl.constexpr,
):
    """The state update of one (chunk, head) for each pending adjustment it can run under, so that
    the sequential kernel need not load k and v: with w_s = η e^{b_L − b_s},
    U = Σ_s w_s k_s v_sᵀ and b_L, for (gm, ga) = (1, 0), (1, step),
    (boost, 0), (boost, step) (SLOTS 4, slot gm_boosted·2 + ga_added, what a boundary can set); chunk 0 of
    the call runs under the adjustments carried in, held in its slot 0. Without consolidation
    (SLOTS 1) every chunk runs under those carried in, its only slot. η's multiplier em is a
    scalar factor the sequential kernel applies (em·U)."""
    i, bh, bi, hi, t, valid = _chunk_program(H, T, off, C)
    cols = tl.arange(0, D)
    k = _load_rows(k_ptr + bi * sk_b + hi * sk_h, t, sk_t, valid, cols)
    v = _load_rows(v_ptr + bi * sv_b + hi * sv_h, t, sv_t, valid, cols)
    for c in tl.static_range(SLOTS):  # c is a compile-time constant: the branches below are static
        if c == 0:
            gm = tl.load(scal_in_ptr + bh * _NSCAL + _GM)
            ga = tl.load(scal_in_ptr + bh * _NSCAL + _GA)
            if SLOTS > 1:
                gm = tl.where(i == 0, gm, 1.0)
                ga = tl.where(i == 0, ga, 0.0)
        elif c == 1:
            gm = 1.0
            ga = lyapunov_step
        elif c == 2:
            gm = gamma_boost
            ga = 0.0
        else:
            gm = gamma_boost
            ga = lyapunov_step
        b, b_last = _log_decay(g_ptr + bi * sg_b + hi * sg_h, t, sg_t, valid, gm, ga, C)
        w = tl.exp(b_last - b) * eta
        slot = (bh * NT + i) * SLOTS + c
        tl.store(upd_ptr + slot * D * D + cols[:, None] * D + cols[None, :],
                 _dot(tl.trans(k * w[:, None]), v, False, VX))
        tl.store(upd_scal_ptr + slot, b_last)


@triton.jit
def _fwd_state_kernel(
    upd_ptr, upd_scal_ptr, basis_ptr, s_in_ptr, scal_in_ptr, x_in_ptr,
    s_out_ptr, scal_out_ptr, x_out_ptr, s_start_ptr, mult_ptr, keep_ptr, stat_f_ptr, flags_ptr, modes_ptr,
    T, NT, NB, off, snr_threshold, gamma_boost, eta_boost, resonance_threshold,
    lyapunov_step, lyapunov_tolerance,
    D: tl.constexpr, C: tl.constexpr, ITERS: tl.constexpr, WARM: tl.constexpr,
    CONSOLIDATE: tl.constexpr, ROWS: tl.constexpr,
):
    """The chain of one (batch, head): per chunk S ← e^{b_L} S + em·U and log_decay ← log_decay + b_L
    from the slot of _fwd_update_kernel that the pending adjustments select, then the consolidation.

    The consolidation needs all of S (ROWS = D). Without it the chain is elementwise in S, so each
    program (program 1) carries ROWS of its rows: D/ROWS times the programs, for small batches. The
    scalars are the same in every program; the first stores them."""
    bh = tl.program_id(0).to(tl.int64)
    first = tl.program_id(1) == 0
    cols = tl.arange(0, D)
    tile = _state_tile(cols, D, CONSOLIDATE, ROWS)

    S = tl.load(s_in_ptr + bh * D * D + tile)
    gm = tl.load(scal_in_ptr + bh * _NSCAL + _GM)
    ga = tl.load(scal_in_ptr + bh * _NSCAL + _GA)
    em = tl.load(scal_in_ptr + bh * _NSCAL + _EM)
    energy_start = tl.load(scal_in_ptr + bh * _NSCAL + _E0)
    log_decay = tl.load(scal_in_ptr + bh * _NSCAL + _LOGD)
    x = tl.load(x_in_ptr + bh * D + cols)  # the power iteration's start when WARM, else passed through
    combo = tl.full((), 0, tl.int32)  # slot of the pending adjustments; chunk 0's slot 0 holds those carried in

    for i in range(NT):
        tl.store(s_start_ptr + (bh * NT + i) * D * D + tile, S)
        _store_pending(mult_ptr + (bh * NT + i) * 3, gm, ga, em, first, CONSOLIDATE)

        slot = (bh * NT + i) * (4 if CONSOLIDATE else 1) + combo  # _fwd_update_kernel's SLOTS
        b_last = tl.load(upd_scal_ptr + slot)
        S = tl.exp(b_last) * S + em * tl.load(upd_ptr + slot * D * D + tile)
        log_decay = log_decay + b_last

        if CONSOLIDATE:
            if (i + 1) * C <= off + T:  # absolute boundary after this chunk: consolidate
                energy = tl.sum(tl.sum(S * S, 1), 0)
                decay = tl.exp(2 * log_decay)  # consolidation.lyapunov_stable
                stable = energy - decay * energy_start <= lyapunov_tolerance * (1 - decay) * energy
                fro = tl.sqrt(energy)
                if not WARM:
                    x = _start_vector(D)
                sigma, x = _top_singular_value(S, fro, x, ITERS)
                snr = sigma * (D**0.5 / 2.0) / tl.maximum(fro, 1.1754943508222875e-38)

                Qb = tl.load(basis_ptr + tile)
                P = _dot(tl.trans(Qb), S, False, False)
                mode_energy = tl.sum(P * P, 1)
                keep = mode_energy > resonance_threshold * (tl.sum(mode_energy, 0) / D)
                n_keep = tl.sum(keep.to(tl.int32), 0)
                energy_start = energy
                if n_keep < D:  # otherwise S − Q·0 = S exactly: skip the product and the new energy
                    S = S - _dot(Qb, tl.where(keep[:, None], 0.0, P), False, False)
                    energy_start = tl.sum(tl.sum(S * S, 1), 0)

                low_snr = snr < snr_threshold
                tl.store(stat_f_ptr + (bh * NB + i) * 4 + 0, snr)
                tl.store(stat_f_ptr + (bh * NB + i) * 4 + 1, tl.sum(tl.where(keep, mode_energy, 0.0), 0))
                tl.store(stat_f_ptr + (bh * NB + i) * 4 + 2, energy)
                tl.store(stat_f_ptr + (bh * NB + i) * 4 + 3, -log_decay / C)
                tl.store(flags_ptr + (bh * NB + i) * 2 + 0, low_snr.to(tl.int8))
                tl.store(flags_ptr + (bh * NB + i) * 2 + 1, stable.to(tl.int8))
                tl.store(modes_ptr + bh * NB + i, n_keep.to(tl.int64))
                tl.store(keep_ptr + (bh * NB + i) * D + cols, keep.to(tl.int8))
                gm = tl.where(low_snr, gamma_boost, 1.0)
                ga = tl.where(stable, 0.0, lyapunov_step)
                em = tl.where(snr > snr_threshold, eta_boost, 1.0)
                combo = low_snr.to(tl.int32) * 2 + 1 - stable.to(tl.int32)
                log_decay = tl.full((), 0.0, tl.float32)

    tl.store(s_out_ptr + bh * D * D + tile, S)
    if first:  # once a kernel: no cost worth a static branch
        tl.store(scal_out_ptr + bh * _NSCAL + _GM, gm)
        tl.store(scal_out_ptr + bh * _NSCAL + _GA, ga)
        tl.store(scal_out_ptr + bh * _NSCAL + _EM, em)
        tl.store(scal_out_ptr + bh * _NSCAL + _E0, energy_start)
        tl.store(scal_out_ptr + bh * _NSCAL + _LOGD, log_decay)
        tl.store(x_out_ptr + bh * D + cols, x)


@triton.jit
def _chunk_inputs(q_ptr, k_ptr, v_ptr, g_ptr, mult_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                  sg_b, sg_h, sg_t, H, T, NT, off, D: tl.constexpr, C: tl.constexpr):
    """What a kernel parallel over (chunk i = program 0, batch·head = program 1) starts from: i, bh,
    the chunk's positions t and their mask, its q, k, v rows, its log-decay b and b_L, and its
    pending multipliers gm (of Γ) and em (of η)."""
    i, bh, bi, hi, t, valid = _chunk_program(H, T, off, C)
    cols = tl.arange(0, D)
    q = _load_rows(q_ptr + bi * sq_b + hi * sq_h, t, sq_t, valid, cols)
    k = _load_rows(k_ptr + bi * sk_b + hi * sk_h, t, sk_t, valid, cols)
    v = _load_rows(v_ptr + bi * sv_b + hi * sv_h, t, sv_t, valid, cols)
    gm = tl.load(mult_ptr + (bh * NT + i) * 3 + 0)
    ga = tl.load(mult_ptr + (bh * NT + i) * 3 + 1)
    em = tl.load(mult_ptr + (bh * NT + i) * 3 + 2)
    b, b_last = _log_decay(g_ptr + bi * sg_b + hi * sg_h, t, sg_t, valid, gm, ga, C)
    return i, bh, t, valid, q, k, v, b, b_last, gm, em


@triton.jit
def _fwd_out_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, s_start_ptr, mult_ptr, o_ptr,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sg_b, sg_h, sg_t,
    H, T, NT, off, eta,
    D: tl.constexpr, C: tl.constexpr, QX: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr,
):
    i, bh, t, valid, q, k, v, b, b_last, gm, em = _chunk_inputs(
        q_ptr, k_ptr, v_ptr, g_ptr, mult_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
        sg_b, sg_h, sg_t, H, T, NT, off, D, C)
    cols = tl.arange(0, D)
    S0 = tl.load(s_start_ptr + (bh * NT + i) * D * D + cols[:, None] * D + cols[None, :])
    o = _chunk_out(q, k, v, S0, b, eta * em, C, QX, KX, VX)
    tl.store(o_ptr + (bh * T + t[:, None]) * D + cols[None, :], o, mask=valid[:, None])


@triton.jit
def _bwd_reads_kernel(
    q_ptr, g_ptr, do_ptr, mult_ptr, ds_read_ptr, decay_ptr,
    sq_b, sq_h, sq_t, sg_b, sg_h, sg_t,
    H, T, NT, off,
    D: tl.constexpr, C: tl.constexpr,
):
    """The chunk's term of the dS scan, R = Σ_t e^{b_t} q_t do_tᵀ, and its decay e^{b_L}, for one
    (chunk, head). (Inside _bwd_query_kernel the product doubled that kernel's spills.)"""
    i, bh, bi, hi, t, valid = _chunk_program(H, T, off, C)
    cols = tl.arange(0, D)
    gm = tl.load(mult_ptr + (bh * NT + i) * 3 + 0)
    ga = tl.load(mult_ptr + (bh * NT + i) * 3 + 1)
    b, b_last = _log_decay(g_ptr + bi * sg_b + hi * sg_h, t, sg_t, valid, gm, ga, C)
    qe = _load_rows(q_ptr + bi * sq_b + hi * sq_h, t, sq_t, valid, cols) * tl.exp(b)[:, None]
    do = _load_rows(do_ptr + bh * T * D, t, D, valid, cols)
    tl.store(ds_read_ptr + (bh * NT + i) * D * D + cols[:, None] * D + cols[None, :],
             _dot(tl.trans(qe), do, False, False))
    tl.store(decay_ptr + bh * NT + i, tl.exp(b_last))


@triton.jit
def _bwd_state_kernel(
    ds_read_ptr, decay_ptr, basis_ptr, keep_ptr, ds_out_ptr, ds_end_ptr, ds_in_ptr,
    T, NT, NB, off,
    D: tl.constexpr, C: tl.constexpr, CONSOLIDATE: tl.constexpr, ROWS: tl.constexpr,
):
    """The reverse scan dS_L = Π dS' (at boundaries), dS0 = e^{b_L} dS_L + R of one (batch, head),
    with the chunk terms R = Σ_t e^{b_t} q_t do_tᵀ and e^{b_L} precomputed by _bwd_reads_kernel:
    per chunk the chain only loads a tile and a scalar (independent of the chain, so they need not
    wait for it) and does an axpy, plus the projection where a boundary dropped modes. Without
    consolidation there is no projection and the chain is elementwise: ROWS rows a program, as in
    the forward."""
    bh = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, D)
    tile = _state_tile(cols, D, CONSOLIDATE, ROWS)

    dS = tl.load(ds_out_ptr + bh * D * D + tile)
    for r in range(NT):
        i = NT - 1 - r
        if CONSOLIDATE:
            if (i + 1) * C <= off + T:  # back through the projection S' = Π S_L: dS_L = Π dS'
                keep = tl.load(keep_ptr + (bh * NB + i) * D + cols) != 0
                if tl.sum(keep.to(tl.int32), 0) < D:
                    dS = _project_out(dS, basis_ptr, keep, cols, D)
        tl.store(ds_end_ptr + (bh * NT + i) * D * D + tile, dS)
        dS = tl.load(decay_ptr + bh * NT + i) * dS + tl.load(ds_read_ptr + (bh * NT + i) * D * D + tile)
    tl.store(ds_in_ptr + bh * D * D + tile, dS)


@triton.jit
def _bwd_query_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, do_ptr, s_start_ptr, mult_ptr, dq_ptr, db_ptr,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sg_b, sg_h, sg_t,
    H, T, NT, off, eta,
    D: tl.constexpr, C: tl.constexpr, QX: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr,
):
    """dq and the intra-chunk and S0 parts of ∂b of one (chunk, head):
    dq = B K + e^{b} ⊙ (dO S0ᵀ),  ∂b ⊇ Σ_s G_ts − Σ_s G_st + e^{b_t} q_t·(S0 do_t)."""
    i, bh, t, valid, q, k, v, b, b_last, gm, em = _chunk_inputs(
        q_ptr, k_ptr, v_ptr, g_ptr, mult_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
        sg_b, sg_h, sg_t, H, T, NT, off, D, C)
    cols = tl.arange(0, D)
    do = _load_rows(do_ptr + bh * T * D, t, D, valid, cols)
    Dm = _decay_mask(b, C) * (eta * em)
    dov = _dot(do, tl.trans(v), False, VX)
    G = _dot(q, tl.trans(k), QX, KX) * Dm * dov
    db = tl.sum(G, 1) - tl.sum(G, 0)
    dq = _dot(dov * Dm, k, False, KX)
    S0 = tl.load(s_start_ptr + (bh * NT + i) * D * D + cols[:, None] * D + cols[None, :])
    do_s0t = _dot(do, tl.trans(S0), False, False)  # row t: S0 do_t
    eb = tl.exp(b)
    dq += eb[:, None] * do_s0t
    db += eb * tl.sum(q * do_s0t, 1)
    tl.store(dq_ptr + (bh * T + t[:, None]) * D + cols[None, :], dq.to(dq_ptr.dtype.element_ty), mask=valid[:, None])
    tl.store(db_ptr + bh * T + t, db, mask=valid)


@triton.jit
def _bwd_key_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, do_ptr, s_start_ptr, mult_ptr, ds_end_ptr, db_ptr,
    dk_ptr, dv_ptr, dg_ptr,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sg_b, sg_h, sg_t,
    H, T, NT, off, eta,
    D: tl.constexpr, C: tl.constexpr, QX: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr,
):
    """dk, dv of one (chunk, head) in the key-major orientation (Aᵀ = (K Qᵀ) ⊙ Dᵀ·η), the rest of
    ∂b (the terms through dS_L) and dΓ = −gm · (reverse cumulative sum of ∂b):
    dk = Bᵀ Q + w ⊙ (V dS_Lᵀ),  dv = Aᵀ dO + w ⊙ (K dS_L).
    The terms through dS_L come first, so dS_L and S0 are dead before dO and the C×C tiles load:
    with q, v bf16 and k fp32 (the layer's under bf16 autocast, the default on a GPU) that cut the
    spills from 808 to 204 bytes a thread, while all-fp32 inputs (``--precision fp32``) went from
    1700 to 2260 (sm_90, Triton 3.6; benchmarks/kernel_resources.py)."""
    i, bh, t, valid, q, k, v, b, b_last, gm, em = _chunk_inputs(
        q_ptr, k_ptr, v_ptr, g_ptr, mult_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
        sg_b, sg_h, sg_t, H, T, NT, off, D, C)
    cols = tl.arange(0, D)
    mat = cols[:, None] * D + cols[None, :]
    dS = tl.load(ds_end_ptr + (bh * NT + i) * D * D + mat)
    w = tl.exp(b_last - b) * (eta * em)
    dk = w[:, None] * _dot(v, tl.trans(dS), VX, False)  # row s: dS v_s
    k_ds = _dot(k, dS, KX, False)  # row s: dSᵀ k_s
    dv = w[:, None] * k_ds
    h = w * tl.sum(k_ds * v, 1)
    S0 = tl.load(s_start_ptr + (bh * NT + i) * D * D + mat)
    through_end = tl.exp(b_last) * tl.sum(tl.sum(dS * S0, 1), 0) + tl.sum(h, 0)
    do = _load_rows(do_ptr + bh * T * D, t, D, valid, cols)
    DmT = _decay_mask_t(b, C) * (eta * em)
    dv += _dot(_dot(k, tl.trans(q), KX, QX) * DmT, do, False, False)
    dk += _dot(_dot(v, tl.trans(do), VX, False) * DmT, q, False, QX)
    tok = (bh * T + t[:, None]) * D + cols[None, :]
    tl.store(dk_ptr + tok, dk.to(dk_ptr.dtype.element_ty), mask=valid[:, None])
    tl.store(dv_ptr + tok, dv.to(dv_ptr.dtype.element_ty), mask=valid[:, None])
    db = tl.load(db_ptr + bh * T + t, mask=valid, other=0.0) - h
    db += tl.where(tl.arange(0, C) == C - 1, through_end, 0.0)
    dg = -gm * tl.cumsum(db, 0, reverse=True)
    tl.store(dg_ptr + bh * T + t, dg.to(dg_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------------------------
# Launchers (plain tensors in and out; the benchmark calls these to compare launch settings)
# ----------------------------------------------------------------------------------------------


def _grid_sizes(T: int, chunk: int, off: int, consolidate: bool) -> tuple[int, int]:
    """(chunks touched, boundaries consolidated) by T tokens starting at offset off inside a chunk."""
    return (off + T + chunk - 1) // chunk, (off + T) // chunk if consolidate else 0


def _strides(*xs: Tensor) -> tuple[int, ...]:
    return tuple(s for x in xs for s in x.stride()[:3])


def _rows_contiguous(x: Tensor) -> Tensor:
    """The kernels take any (b, h, t) strides but need unit stride along the head dim."""
    return x if x.stride(-1) == 1 else x.contiguous()


@dataclass(frozen=True)
class LaunchSettings:
    """Warps of the kernels (the GPU benchmark compares settings): of the sequential per-head
    kernels, of the forward update and output kernels and of the backward gradient kernels (all
    parallel over (chunk, head)); and the rows of S each program of a sequential kernel carries
    without consolidation (with it, all d). See notes_memory_kernel.md for the measurements behind
    the defaults (state_rows: not measured yet)."""

    state_warps: int = 4
    out_warps: int = 4
    grad_warps: int = 4
    state_rows: int = 16

    def __post_init__(self):
        for name in ("state_warps", "out_warps", "grad_warps", "state_rows"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1 and value & (value - 1) == 0):
                raise ValueError(f"LaunchSettings.{name}: got {value!r}; allowed: a power of two >= 1")


def _chain_rows(d: int, consolidate: bool, launch: LaunchSettings) -> int:
    """Rows of S a program of the sequential kernels carries: all of them for the consolidation."""
    return d if consolidate else min(launch.state_rows, d)


def _exact(x: Tensor) -> bool:
    """Whether x's values are exactly representable in tf32 (so _dot needs no low half for it)."""
    return x.dtype in (torch.bfloat16, torch.float16)


class Forward(NamedTuple):
    """What :func:`forward_launch` returns (see there)."""

    o: Tensor
    S: Tensor
    scal: Tensor
    x: Tensor
    stat_f: Tensor
    flags: Tensor
    modes: Tensor
    s_start: Tensor
    mult: Tensor
    keep: Tensor


def forward_launch(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor, S0: Tensor, scal0: Tensor,
                   x0: Tensor, eta: float, off: int, cfg: ConsolidationConfig,
                   launch: LaunchSettings = LaunchSettings()) -> Forward:
    """Run the forward kernels (x0 (B,H,d): the state's power-iteration vector). Returns (o, S, scal,
    x, stat_f, flags, modes, s_start, mult, keep): o (B,H,T,d) fp32; S (B,H,d,d); scal (B,H,5) =
    the SCALARS; x (B,H,d) the vector the last boundary's
    power iteration ended on (x0 if none); stat_f (B,H,nb,4) = snr, resonance_energy, energy,
    effective_gamma; flags (B,H,nb,2) int8 = low_snr, stable;
    modes (B,H,nb) int64 resonant modes; s_start (B,H,nt,d,d) S at every chunk start; mult (B,H,nt,3)
    the adjustments in force in every chunk; keep (B,H,nb,d) int8 mode masks. Without consolidation
    there are no boundaries to report: nb = 0."""
    q, k, v, gamma = (_rows_contiguous(x) for x in (q, k, v, gamma))
    B, H, T, d = q.shape
    C = cfg.chunk
    NT, NB = _grid_sizes(T, C, off, cfg.enabled)
    slots = 4 if cfg.enabled else 1  # the pending adjustments a chunk can run under
    rows = _chain_rows(d, cfg.enabled, launch)
    f32 = dict(dtype=torch.float32, device=q.device)
    o = torch.empty(B, H, T, d, **f32)
    S = torch.empty(B, H, d, d, **f32)
    scal = torch.empty(B, H, len(SCALARS), **f32)
    x = torch.empty(B, H, d, **f32)
    stat_f = torch.empty(B, H, NB, 4, **f32)
    flags = torch.empty(B, H, NB, 2, dtype=torch.int8, device=q.device)
    modes = torch.empty(B, H, NB, dtype=torch.int64, device=q.device)
    s_start = torch.empty(B, H, NT, d, d, **f32)
    mult = torch.empty(B, H, NT, 3, **f32)
    keep = torch.empty(B, H, NB, d, dtype=torch.int8, device=q.device)
    scal0 = scal0.contiguous()
    upd = torch.empty(B, H, NT, slots, d, d, **f32)  # the chunk updates under each pending adjustment
    upd_scal = torch.empty(B, H, NT, slots, **f32)  # their b_L
    _fwd_update_kernel[(NT, B * H)](
        k, v, gamma, scal0, upd, upd_scal, *_strides(k, v, gamma), H, T, NT, off, eta, cfg.gamma_boost,
        cfg.lyapunov_gamma_step, D=d, C=C, VX=_exact(v), SLOTS=slots, num_warps=launch.out_warps,
    )
    _fwd_state_kernel[(B * H, d // rows)](
        upd, upd_scal, basis.contiguous().float(), S0.contiguous(), scal0, x0.float().contiguous(),
        S, scal, x, s_start, mult, keep, stat_f, flags, modes,
        T, NT, NB, off, cfg.snr_threshold, cfg.gamma_boost, cfg.eta_boost, cfg.resonance_threshold,
        cfg.lyapunov_gamma_step, cfg.lyapunov_tolerance,
        D=d, C=C, ITERS=cfg.power_iterations, WARM=cfg.power_warm_start,
        CONSOLIDATE=cfg.enabled, ROWS=rows, num_warps=launch.state_warps,
    )
    _fwd_out_kernel[(NT, B * H)](
        q, k, v, gamma, s_start, mult, o, *_strides(q, k, v, gamma), H, T, NT, off, eta,
        D=d, C=C, QX=_exact(q), KX=_exact(k), VX=_exact(v), num_warps=launch.out_warps,
    )
    return Forward(o, S, scal, x, stat_f, flags, modes, s_start, mult, keep)


def backward_launch(do: Tensor, dS: Tensor, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor,
                    s_start: Tensor, mult: Tensor, keep: Tensor, eta: float, off: int, chunk: int,
                    consolidate: bool, launch: LaunchSettings = LaunchSettings()
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run the backward kernels: (dq, dk, dv, dgamma) in the inputs' dtypes and dS0 (fp32)."""
    q, k, v, gamma = (_rows_contiguous(x) for x in (q, k, v, gamma))
    B, H, T, d = q.shape
    NT, NB = _grid_sizes(T, chunk, off, consolidate)
    if keep.shape[2] != NB:
        raise ValueError(f"backward_launch: consolidate={consolidate} means {NB} boundaries, but keep has "
                         f"{keep.shape[2]}: pass the forward's consolidation setting")
    rows = _chain_rows(d, consolidate, launch)
    do = do.float().contiguous()
    dS = dS.float().contiguous()
    dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
    dg = torch.empty(B, H, T, dtype=gamma.dtype, device=gamma.device)
    dS0 = torch.empty(B, H, d, d, dtype=torch.float32, device=q.device)
    ds_end = torch.empty(B, H, NT, d, d, dtype=torch.float32, device=q.device)  # dS_L of every chunk
    ds_read = torch.empty(B, H, NT, d, d, dtype=torch.float32, device=q.device)  # Σ_t e^{b_t} q_t do_tᵀ per chunk
    decay = torch.empty(B, H, NT, dtype=torch.float32, device=q.device)  # e^{b_L} per chunk
    _bwd_reads_kernel[(NT, B * H)](
        q, gamma, do, mult, ds_read, decay, *_strides(q, gamma), H, T, NT, off, D=d, C=chunk,
        num_warps=launch.grad_warps,
    )
    _bwd_state_kernel[(B * H, d // rows)](
        ds_read, decay, basis.contiguous().float(), keep, dS, ds_end, dS0, T, NT, NB, off,
        D=d, C=chunk, CONSOLIDATE=consolidate, ROWS=rows, num_warps=launch.state_warps,
    )
    db = torch.empty(B, H, T, dtype=torch.float32, device=q.device)  # ∂b from the query side
    _bwd_query_kernel[(NT, B * H)](
        q, k, v, gamma, do, s_start, mult, dq, db, *_strides(q, k, v, gamma), H, T, NT, off, eta,
        D=d, C=chunk, QX=_exact(q), KX=_exact(k), VX=_exact(v), num_warps=launch.grad_warps,
    )
    _bwd_key_kernel[(NT, B * H)](
        q, k, v, gamma, do, s_start, mult, ds_end, db, dk, dv, dg, *_strides(q, k, v, gamma), H, T, NT, off, eta,
        D=d, C=chunk, QX=_exact(q), KX=_exact(k), VX=_exact(v), num_warps=launch.grad_warps,
    )
    return dq, dk, dv, dg, dS0


# ----------------------------------------------------------------------------------------------
# Custom ops (tensor-only signatures, so torch.compile sees one opaque node per call) and autograd
# ----------------------------------------------------------------------------------------------


def _forward(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor, S0: Tensor, scal0: Tensor,
             x0: Tensor, eta: float, off: int, config: list[float]
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return forward_launch(q, k, v, gamma, basis, S0, scal0, x0, eta, off, _config(config))


def _forward_fake(q, k, v, gamma, basis, S0, scal0, x0, eta, off, config):
    B, H, T, d = q.shape
    cfg = _config(config)
    NT, NB = _grid_sizes(T, cfg.chunk, off, cfg.enabled)
    f32 = dict(dtype=torch.float32)
    return Forward(
        o=q.new_empty(B, H, T, d, **f32), S=q.new_empty(B, H, d, d, **f32), scal=q.new_empty(B, H, len(SCALARS), **f32),
        x=q.new_empty(B, H, d, **f32), stat_f=q.new_empty(B, H, NB, 4, **f32),
        flags=q.new_empty(B, H, NB, 2, dtype=torch.int8), modes=q.new_empty(B, H, NB, dtype=torch.int64),
        s_start=q.new_empty(B, H, NT, d, d, **f32), mult=q.new_empty(B, H, NT, 3, **f32),
        keep=q.new_empty(B, H, NB, d, dtype=torch.int8))


def _backward(do: Tensor, dS: Tensor, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor,
              s_start: Tensor, mult: Tensor, keep: Tensor, eta: float, off: int, chunk: int, consolidate: bool
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return backward_launch(do, dS, q, k, v, gamma, basis, s_start, mult, keep, eta, off, chunk, consolidate)


def _backward_fake(do, dS, q, k, v, gamma, basis, s_start, mult, keep, eta, off, chunk, consolidate):
    B, H, T, d = q.shape
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), gamma.new_empty(B, H, T),
            q.new_empty(B, H, d, d, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    out = Forward(*output)
    ctx.save_for_backward(inputs.q, inputs.k, inputs.v, inputs.gamma, inputs.basis, out.s_start, out.mult, out.keep)
    cfg = _config(inputs.config)
    ctx.eta, ctx.off, ctx.chunk, ctx.consolidate = inputs.eta, inputs.off, cfg.chunk, cfg.enabled
    ctx.mark_non_differentiable(out.scal, out.x, out.stat_f, out.flags, out.modes, out.s_start, out.mult, out.keep)
    # Unused outputs' gradients stay None: no zero (B,H,nt,d,d) tensors are materialised.
    ctx.set_materialize_grads(False)


def _gradients(ctx, backward, do, dS, *_nondifferentiable):
    """Gradients of q, k, v, Γ and the incoming S from those of o and of the new S (either may be None)."""
    q, k, v, gamma, basis, s_start, mult, keep = ctx.saved_tensors
    B, H, T, d = q.shape
    do = q.new_zeros(B, H, T, d, dtype=torch.float32) if do is None else do
    dS = q.new_zeros(B, H, d, d, dtype=torch.float32) if dS is None else dS
    dq, dk, dv, dg, dS0 = backward(do, dS, q, k, v, gamma, basis, s_start, mult, keep, ctx.eta, ctx.off, ctx.chunk,
                                   ctx.consolidate)
    return dict(q=dq, k=dk, v=dv, gamma=dg, S0=dS0)


_memory = TritonOp("memory", _forward, _backward, forward_fake=_forward_fake, backward_fake=_backward_fake,
                   setup_context=_setup_context, gradients=_gradients)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def _check(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor, cfg: ConsolidationConfig,
           state: MemoryState | None) -> None:
    B, H, T, d = q.shape
    if k.shape != q.shape or v.shape != q.shape or gamma.shape != (B, H, T) or basis.shape != (d, d):
        raise ValueError(f"expected q, k, v (B,H,T,d), gamma (B,H,T), basis (d,d); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, gamma {tuple(gamma.shape)}, "
                         f"basis {tuple(basis.shape)}")
    if d not in MEMORY_KERNEL_HEAD_DIMS or cfg.chunk not in MEMORY_KERNEL_CHUNKS:
        raise ValueError(f"the Triton memory kernel supports head_dim in {MEMORY_KERNEL_HEAD_DIMS} and chunk in "
                         f"{MEMORY_KERNEL_CHUNKS} (tl.dot needs dims ≥ 16, powers of two); got head_dim {d}, "
                         f"chunk {cfg.chunk}: use the PyTorch path")
    if T == 0:
        raise ValueError("the Triton memory kernel needs at least one token")
    for name, x in (("q", q), ("k", k), ("v", v), ("gamma", gamma)):
        if x.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"the Triton memory kernel takes bf16, fp16 or fp32 inputs; {name} is {x.dtype}")
    if state is not None and state.S.dtype != torch.float32:
        raise ValueError(f"the Triton memory kernel keeps an fp32 state; got {state.S.dtype}")


def dissipative_memory_triton(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, eta: float, basis: Tensor,
                              cfg: ConsolidationConfig, pos: int = 0, state: MemoryState | None = None
                              ) -> tuple[Tensor, MemoryState, dict[str, Tensor]]:
    """The Triton path of :func:`breath.ops.dissipative_memory.dissipative_memory` (same contract).

    Args:
        q, k, v: (B, H, T, d), bf16, fp16 or fp32 (accumulated in fp32); d in {16, 32, 64}.
        gamma: (B, H, T) forgetting rates Γ ≥ 0.
        eta, basis, cfg, pos, state: as in the reference; cfg.chunk in {16, 32, 64}; the state is fp32.

    Returns:
        o (B, H, T, d) fp32, the new MemoryState, and the per-boundary stats, each (B, H, nb)
        (none without consolidation: an empty dict).
    """
    _check(q, k, v, gamma, basis, cfg, state)
    B, H, T, d = q.shape
    if state is None:
        state = MemoryState.zeros(B, H, d, torch.float32, q.device)
    out = Forward(*_memory(q, k, v, gamma, basis, state.S, _pack_scalars(state), state.vector, float(eta),
                           pos % cfg.chunk, _config_values(cfg)))
    state = MemoryState(S=out.S, vector=out.x, **_unpack_scalars(out.scal))
    if not cfg.enabled:
        return out.o, state, {}
    snr, resonance_energy, energy, effective_gamma = out.stat_f.unbind(-1)
    low_snr, stable = out.flags.view(torch.bool).unbind(-1)
    stats = {"snr": snr, "low_snr": low_snr, "resonant_modes": out.modes, "resonance_energy": resonance_energy,
             "stable": stable, "energy": energy, "effective_gamma": effective_gamma}
    return out.o, state, stats
