"""Dissipative Hebbian memory with consolidation (DESIGN §5): the chunked op and its reference.

Per batch row b and head h (head_dim d), token t (Δt = 1), with pending adjustments set at the last
chunk boundary (see :mod:`breath.ops.consolidation`):

    Γeff_t = Γ_t · gamma_mult + gamma_add        λ_t = exp(−Γeff_t)        η_t = η · eta_mult
    S_t = λ_t S_{t−1} + η_t k_t v_tᵀ              o_t = S_tᵀ q_t
    log_decay_t = log_decay_{t−1} − Γeff_t       (from 0 at the last boundary: the Lyapunov monitor's Λ)

``S`` is indexed S[key_dim, value_dim]; the read happens after the write of token t and before any
consolidation. After the token at absolute position p with (p + 1) % chunk == 0, S is consolidated
and the pending adjustments for the next chunk are set. Keys arrive L2-normalised from the layer.
With consolidation off (``cfg.enabled`` False) a boundary does nothing: the adjustments carried in
stay in force (the empty state's are neutral), and no stats are returned.

Chunked form. A call is split at the absolute chunk boundaries into segments (the first may be
partial, the last ragged). Inside a segment the adjustments are constant, so with the inclusive
cumulative log-decay ``b_t = Σ_{s≤t} log λ_s`` (segment-local) the recurrence unrolls to

    o_t     = e^{b_t} S0ᵀ q_t + Σ_{s≤t} e^{b_t − b_s} η_s (q_t·k_s) v_s
    S_end   = e^{b_L} S0 + Σ_s e^{b_L − b_s} η_s k_s v_sᵀ
    log_decay_end = log_decay0 + b_L

Since Γeff ≥ 0, b is non-increasing and only the non-positive differences b_t − b_s (s ≤ t) are
exponentiated: nothing overflows, however strong the decay. Each segment is a few batched matmuls;
the Python loop runs over segments only, and autograd gives exact BPTT through S.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from breath.ops.backend import (MEMORY_KERNEL_CHUNKS, MEMORY_KERNEL_HEAD_DIMS, kernels_fit, note_fallback,
                                require_kernels, triton_mode)
from breath.ops.consolidation import STAT_NAMES, ConsolidationConfig, consolidate, start_vector


class MemoryState(NamedTuple):
    """Memory carried between calls; every field is (B, H) except S (B, H, d, d) and vector (B, H, d)."""

    S: Tensor  # fast weights S[key_dim, value_dim]
    gamma_mult: Tensor  # pending Γ multiplier for the current chunk: 1 or gamma_boost
    gamma_add: Tensor  # pending additive Γ: 0 or lyapunov_gamma_step
    eta_mult: Tensor  # pending η multiplier: 1 or eta_boost
    energy_start: Tensor  # ‖S‖²_F right after the last consolidation
    log_decay: Tensor  # Σ log λ_t = −Σ Γeff_t since the last chunk boundary (Lyapunov monitor)
    vector: Tensor  # unit vector the last boundary's power iteration ended on: the next one's start

    @staticmethod
    def zeros(B: int, H: int, d: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> MemoryState:
        """The empty memory: S = 0, multipliers 1, additive Γ 0, energy 0, log-decay 0, the fixed
        start vector of the power iteration."""
        zero = torch.zeros(B, H, dtype=dtype, device=device)
        return MemoryState(torch.zeros(B, H, d, d, dtype=dtype, device=device),
                           zero + 1, zero, zero + 1, zero, zero,
                           start_vector(d, dtype, zero.device).expand(B, H, d).contiguous())


def _prepare(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, basis: Tensor,
             state: MemoryState | None) -> tuple[MemoryState, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, build the empty state if needed, cast inputs to the state dtype."""
    B, H, T, d = q.shape
    if k.shape != q.shape or v.shape != q.shape or gamma.shape != (B, H, T) or basis.shape != (d, d):
        raise ValueError(f"expected q, k, v (B,H,T,d), gamma (B,H,T), basis (d,d); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, gamma {tuple(gamma.shape)}, "
                         f"basis {tuple(basis.shape)}")
    if state is None:
        state = MemoryState.zeros(B, H, d, torch.promote_types(q.dtype, torch.float32), q.device)
    dtype = state.S.dtype
    return state, q.to(dtype), k.to(dtype), v.to(dtype), gamma.to(dtype), basis.to(dtype)


def _consolidate(state: MemoryState, basis: Tensor, cfg: ConsolidationConfig
                 ) -> tuple[MemoryState, dict[str, Tensor]]:
    """Consolidate at a chunk boundary; energy_start restarts from the projected energy, log_decay from 0."""
    c = consolidate(state.S, state.energy_start, state.log_decay, basis, cfg, state.vector)
    return (MemoryState(c.S, c.gamma_mult, c.gamma_add, c.eta_mult, c.energy, torch.zeros_like(c.energy), c.vector),
            c.stats)


def _stack_stats(per_boundary: list[dict[str, Tensor]], state: MemoryState, cfg: ConsolidationConfig
                 ) -> dict[str, Tensor]:
    """Stack per-boundary stats to (B, H, nb); nb = 0 gives empty tensors of the same dtypes; no
    consolidation, no stats."""
    if not cfg.enabled:
        return {}
    if per_boundary:
        return {name: torch.stack([s[name] for s in per_boundary], -1) for name in STAT_NAMES}
    empty = state.energy_start.new_empty(state.energy_start.shape + (0,))
    dtypes = {"low_snr": torch.bool, "stable": torch.bool, "resonant_modes": torch.int64}
    return {name: empty.to(dtypes.get(name, empty.dtype)) for name in STAT_NAMES}


def dissipative_memory_recurrent(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, eta: float, basis: Tensor,
                                 cfg: ConsolidationConfig, pos: int = 0, state: MemoryState | None = None
                                 ) -> tuple[Tensor, MemoryState, dict[str, Tensor]]:
    """Reference: the recurrence token by token (the ground truth for :func:`dissipative_memory`)."""
    state, q, k, v, gamma, basis = _prepare(q, k, v, gamma, basis, state)
    outputs, stats = [], []
    for t in range(q.shape[2]):
        log_lam = -(gamma[:, :, t] * state.gamma_mult + state.gamma_add)
        lam = torch.exp(log_lam)
        eta_t = eta * state.eta_mult
        kt, vt = k[:, :, t], v[:, :, t]
        S = lam[..., None, None] * state.S + eta_t[..., None, None] * kt[..., :, None] * vt[..., None, :]
        outputs.append((S.mT @ q[:, :, t, :, None]).squeeze(-1))
        state = state._replace(S=S, log_decay=state.log_decay + log_lam.detach())
        if cfg.enabled and (pos + t + 1) % cfg.chunk == 0:
            state, boundary_stats = _consolidate(state, basis, cfg)
            stats.append(boundary_stats)
    return torch.stack(outputs, 2), state, _stack_stats(stats, state, cfg)


def _segment_lengths(pos: int, T: int, chunk: int) -> list[int]:
    """Lengths of the segments of positions pos .. pos+T−1, cut after every absolute chunk boundary."""
    lengths, start = [], pos
    while start < pos + T:
        lengths.append(min(pos + T, start + chunk - start % chunk) - start)
        start += lengths[-1]
    return lengths


def _segment(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, eta: float, state: MemoryState
             ) -> tuple[Tensor, MemoryState]:
    """Exact parallel form over one segment (no boundary inside): returns o (B,H,L,d) and the state."""
    L = q.shape[2]
    b = (-(gamma * state.gamma_mult[..., None] + state.gamma_add[..., None])).cumsum(-1)  # (B,H,L)
    eta_seg = (eta * state.eta_mult)[..., None, None]  # η is constant within a segment
    index = torch.arange(L, device=q.device)
    future = index[None, :] > index[:, None]  # s > t
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(future, float("-inf")).exp()  # e^{b_t−b_s}, s≤t
    o = b.exp()[..., None] * (q @ state.S) + ((q @ k.mT) * decay * eta_seg) @ v
    b_last = b[..., -1:]
    weight = (b_last - b).exp()[..., None] * eta_seg  # e^{b_L − b_s} η_s, (B,H,L,1)
    S = b_last.exp()[..., None] * state.S + (k * weight).mT @ v
    return o, state._replace(S=S, log_decay=state.log_decay + b_last.squeeze(-1).detach())


def _kernel_sizes(q: Tensor, cfg: ConsolidationConfig, state: MemoryState | None) -> bool:
    """Whether the kernels compile for this head_dim, chunk and state dtype; if not, says so once
    (the PyTorch path is some 100x slower on a GPU: a silent switch would look like a slow model)."""
    dtype = state.S.dtype if state is not None else q.dtype
    if q.shape[-1] not in MEMORY_KERNEL_HEAD_DIMS or cfg.chunk not in MEMORY_KERNEL_CHUNKS:
        note_fallback(f"the memory kernels compile for head_dim in {MEMORY_KERNEL_HEAD_DIMS} and memory_chunk in "
                      f"{MEMORY_KERNEL_CHUNKS}, not head_dim {q.shape[-1]}, memory_chunk {cfg.chunk}")
        return False
    if dtype == torch.float64:
        note_fallback("the memory kernels compute in float32; a float64 memory runs in PyTorch")
        return False
    return True


def dissipative_memory(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, eta: float, basis: Tensor,
                       cfg: ConsolidationConfig, pos: int = 0, state: MemoryState | None = None,
                       use_triton: str | bool | None = "auto") -> tuple[Tensor, MemoryState, dict[str, Tensor]]:
    """Dissipative Hebbian memory with consolidation, chunked (see the module docstring).

    Args:
        q, k, v: (B, H, T, d), keys L2-normalised; any float dtype (computed in the state dtype).
        gamma: (B, H, T) forgetting rates Γ ≥ 0.
        eta: Hebbian rate η.
        basis: (d, d) real orthonormal resonance basis (columns = modes).
        cfg: consolidation hyper-parameters (chunk size included).
        pos: absolute position of token 0 of this call (decides where the boundaries fall).
        state: memory from the previous call; None is the empty memory. The state dtype (float32,
            or float64 for float64 inputs when state is None) is the compute dtype.
        use_triton: "on" runs the fused Triton kernels (:mod:`breath.ops.dissipative_memory_triton`;
            CUDA tensors, or CPU under ``TRITON_INTERPRET=1``); "off" this PyTorch path; "auto" the
            kernels when ``backend.kernels_fit`` (CUDA, Ampere or newer, Triton), the state is not
            float64 and head_dim and chunk are among the kernels' sizes (``backend.py``), else this path
            (said once where the device could run the kernels).

    Returns:
        o (B, H, T, d) in the state dtype, the new state, and per-boundary stats
        (``snr, low_snr, resonant_modes, resonance_energy, stable, energy, effective_gamma``), each
        (B, H, nb) for the nb chunk boundaries crossed by this call (none with consolidation off).
    """
    mode = triton_mode(use_triton)
    if mode == "auto":
        mode = "on" if kernels_fit(q) and _kernel_sizes(q, cfg, state) else "off"
    if mode == "on":
        require_kernels(q, "dissipative_memory")
        # Imported here: tests set TRITON_INTERPRET before triton is first imported.
        from breath.ops.dissipative_memory_triton import dissipative_memory_triton

        return dissipative_memory_triton(q, k, v, gamma, eta, basis, cfg, pos=pos, state=state)
    state, q, k, v, gamma, basis = _prepare(q, k, v, gamma, basis, state)
    lengths = _segment_lengths(pos, q.shape[2], cfg.chunk)
    outputs, stats, end = [], [], pos
    # split (not slicing in a loop): its backward is one concatenation, not a zero fill per segment
    for segment in zip(*(x.split(lengths, dim=2) for x in (q, k, v, gamma))):
        o, state = _segment(*segment, eta, state)
        outputs.append(o)
        end += o.shape[2]
        if cfg.enabled and end % cfg.chunk == 0:
            state, boundary_stats = _consolidate(state, basis, cfg)
            stats.append(boundary_stats)
    return torch.cat(outputs, 2), state, _stack_stats(stats, state, cfg)
