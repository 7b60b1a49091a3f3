"""Causal softmax self-attention with rotary positions and a KV cache (the Transformer baseline).

``softmax(q kᵀ/√d + causal mask) v`` through ``scaled_dot_product_attention`` (flash kernels on GPU).
Rotary embeddings rotate q and k by position-dependent angles ``p · θ_i``, ``θ_i = 10000^{−2i/d}``,
computed for any absolute position, so the baseline has no per-position parameters either.

The KV cache is a pair of preallocated buffers (B, H, capacity, d): a continued call writes its
keys and values in place at their positions (no copy of the past) and attends over the whole
buffer with a length mask ``key slot ≤ query position``, so a one-token step has the same shapes at
every position (a CUDA graph can replay it). Slots past the sequence hold zeros, and the mask gives
them zero weight. The buffers are shared by the states of one sequence: continuing from a state
overwrites the slots after its position in every state derived from it (as in any KV cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# cuDNN's attention builds an execution plan per shape (tens of ms each on an H100), and a cache's
# capacity changes when it grows, so cached calls use the other kernels (the mask rules out flash).
CACHED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

ROPE_BASE = 10000.0


def rotary(x: torch.Tensor, pos: int | torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x_{2i}, x_{2i+1})`` of x (B, H, T, d) by ``p_t θ_i``: ``p_t = pos + t``, or
    the given (T,) tensor of positions."""
    d, dtype = x.shape[-1], torch.promote_types(x.dtype, torch.float32)  # bf16 angles would drift
    inv_freq = ROPE_BASE ** (-torch.arange(0, d, 2, device=x.device, dtype=dtype) / d)
    if not isinstance(pos, torch.Tensor):
        pos = torch.arange(pos, pos + x.shape[-2], device=x.device)
    angles = pos.to(dtype)[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(dtype)[..., 0::2], x.to(dtype)[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return rotated.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.qkv = nn.Linear(d_model, 3 * num_heads * head_dim, bias=False)
        self.out = nn.Linear(num_heads * head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, pos: int, cache: tuple[torch.Tensor, torch.Tensor] | None,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, d_model) at absolute positions pos.. (or ``positions``, a (T,) device tensor) →
        (y, (keys, values)): without a cache, those of x; with one, its buffers written in place."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            q, k = rotary(q, pos), rotary(k, pos)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
            return self.out(y.transpose(1, 2).reshape(batch, length, -1)), (k, v)
        if positions is None:
            positions = torch.arange(pos, pos + length, device=x.device)
        q, k = rotary(q, positions), rotary(k, positions)
        if pos + length > cache[0].shape[2]:  # no room: grow, doubling (amortised O(1) per token)
            cache = reserve_cache(cache, pos, max(pos + length, 2 * cache[0].shape[2]))
        keys, values = cache
        keys.index_copy_(2, positions, k.to(keys.dtype))
        values.index_copy_(2, positions, v.to(values.dtype))
        mask = torch.arange(keys.shape[2], device=x.device) <= positions[:, None]  # (T, capacity)
        with sdpa_kernel(CACHED_BACKENDS):
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, -1)), cache


def reserve_cache(cache: tuple[torch.Tensor, torch.Tensor], length: int, capacity: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` positions of ``cache`` (keys, values) copied into zero-filled buffers
    of ``capacity`` positions. Zeros, not uninitialised memory: a masked slot gets weight 0, and
    0 · NaN would still be NaN."""
    if capacity < length:
        raise ValueError(f"capacity: got {capacity}; allowed: at least the {length} tokens already in the cache")
    buffers = []
    for x in cache:
        buffer = x.new_zeros(*x.shape[:2], capacity, x.shape[3])
        buffer[:, :, :length] = x[:, :, :length]
        buffers.append(buffer)
    return tuple(buffers)
