"""Dissipative Hebbian memory layer: projections, the chunked memory op, per-head RMS norm, W_o
(DESIGN §5).

Per head h (head_dim d), with Γ from the BK channel of the same head:

    (q_t, k_t, v_t) = ShortConv_w(W_qkv x)_t             (causal, depthwise, width w = ``conv``)
    S_t = e^{−Γ_t} S_{t−1} + η k_t v_tᵀ        o_t = S_tᵀ q_t        y_t = W_o · RMSNorm(o_t)

consolidated (SNR filter, zeta resonance, Lyapunov monitor) at every absolute multiple of
``memory_chunk``. The convolution (:mod:`breath.layers.short_conv`) lets a key and its value see
the few tokens before them, so a write can store "after something like x_{t−1} came v_t" and a
query retrieves what followed earlier occurrences of the current token: the associative recall
that a key and a value taken from one token alone cannot do (a departure from the seed; see
docs/model.md and QUALITY.md). ``conv=0`` is the seed's write. ``key_shift`` is the fixed
alternative, measured before the convolution: the key written at t is the previous token's
(k_{−1} = 0), S_t = e^{−Γ_t} S_{t−1} + η k_{t−1} v_tᵀ.

Keys are L2-normalised: a write then adds exactly ``η²‖v‖²`` of energy, which bounds the memory
without clamps, makes the SNR scale-free, and lets retrieval score keys by cosine similarity. Queries need no scaling: the RMS norm after the read
removes their scale.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from breath.layers.short_conv import ShortConv
from breath.layers.zeta import zeta_basis
from breath.ops.consolidation import ConsolidationConfig
from breath.ops.dissipative_memory import MemoryState, dissipative_memory


class MemoryLayerState(NamedTuple):
    """What the layer carries between calls: the memory op's state; with the key shift, the last
    token's key (B, H, d), which the next call's first token writes with; with the short
    convolution, its last ``conv − 1`` inputs (B, conv − 1, 3·H·d)."""

    memory: MemoryState
    last_key: torch.Tensor | None
    conv_tail: torch.Tensor | None


_NORM_EPS = 1e-12  # F.normalize's floor on ‖x‖


class UnitKeys(torch.autograd.Function):
    """``y = x / max(‖x‖, ε)`` along the last dim, computed in at least float32, exactly as
    ``F.normalize``, but saving only y and ‖x‖ for the backward,

        dx = (dy − y (y·dy)) / ‖x‖        (dy / ε where ‖x‖ < ε, where y = x / ε is linear),

    not the float32 copy of x that F.normalize keeps. Without the key shift the memory op keeps y
    anyway, so this saves a (B, H, T, d) float32 tensor per layer (8 MB at base B4 T1024)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.input_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        y = x / norm.clamp_min(_NORM_EPS)
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        y, norm = ctx.saved_tensors
        dx = torch.where(norm >= _NORM_EPS, (dy - y * (y * dy).sum(-1, keepdim=True)) / norm.clamp_min(_NORM_EPS),
                         dy / _NORM_EPS)
        return dx.to(ctx.input_dtype)


class SplitHeads(torch.autograd.Function):
    """(B, T, 3, H, d) projections → q, k, v (B, H, T, d), with q and v copied into a storage of their
    own and k a view. The memory op keeps q and v for the backward; as views of the projections they
    would keep the key third alive too, which no backward reads (UnitKeys keeps its float32 output):
    one copy of two thirds frees a (B, T, H·d) tensor per layer. The backward writes the three
    gradients into one tensor, as unbind's does (slicing twice would add two zero-filled ones)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, v = qkv[:, :, 0::2].permute(2, 0, 3, 1, 4).contiguous()
        return q, qkv[:, :, 1].transpose(1, 2), v

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
        return torch.stack([g.transpose(1, 2) for g in (dq, dk, dv)], dim=2)


class HebbianMemory(nn.Module):
    def __init__(self, d_model: int, num_heads: int, head_dim: int, eta: float,
                 consolidation: ConsolidationConfig, conv: int = 0, key_shift: bool = False,
                 use_triton: str = "auto"):
        super().__init__()
        self.num_heads, self.head_dim, self.eta = num_heads, head_dim, eta
        self.consolidation = consolidation
        self.key_shift = key_shift
        self.use_triton = use_triton
        self.qkv = nn.Linear(d_model, 3 * num_heads * head_dim, bias=False)
        self.conv = ShortConv(3 * num_heads * head_dim, conv, use_triton=use_triton) if conv else None
        self.norm = nn.RMSNorm(head_dim)
        self.out = nn.Linear(num_heads * head_dim, d_model, bias=False)
        # A deterministic function of head_dim (exact zeta zeros): not stored in checkpoints.
        self.register_buffer("basis", zeta_basis(head_dim), persistent=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, pos: int, state: MemoryLayerState | None
                ) -> tuple[torch.Tensor, MemoryLayerState, dict[str, torch.Tensor]]:
        """x (B, T, d_model), Γ (B, T, H) → (y (B, T, d_model), new state, per-boundary stats)."""
        batch, length, _ = x.shape
        qkv, conv_tail = self.qkv(x), None
        if self.conv is not None:
            qkv, conv_tail = self.conv(qkv, None if state is None else state.conv_tail)
        q, k, v = SplitHeads.apply(qkv.view(batch, length, 3, self.num_heads, self.head_dim))
        # Normalise in at least float32: bf16 keys under autocast would carry ~1% norm error.
        k = UnitKeys.apply(k)
        last_key = None
        if self.key_shift:
            last_key = k[:, :, -1].clone()  # a view would keep all of k alive inside the state
            first = k.new_zeros(batch, self.num_heads, 1, self.head_dim) if state is None else state.last_key[:, :, None]
            k = torch.cat((first, k[:, :, :-1]), dim=2)
        o, memory_state, stats = dissipative_memory(
            q, k, v, gamma.transpose(1, 2), self.eta, self.basis, self.consolidation,
            pos=pos, state=None if state is None else state.memory, use_triton=self.use_triton,
        )
        o = self.norm(o.to(x.dtype)).transpose(1, 2).reshape(batch, length, -1)
        return self.out(o), MemoryLayerState(memory_state, last_key, conv_tail), stats
