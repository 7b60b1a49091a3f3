"""Causal softmax self-attention with rotary positions and a KV cache (the Transformer baseline).

``softmax(q kᵀ/√d + causal mask) v`` through ``scaled_dot_product_attention`` (flash kernels on GPU).
Rotary embeddings rotate q and k by position-dependent angles ``p · θ_i``, ``θ_i = 10000^{−2i/d}``,
computed for any absolute position, so the baseline has no per-position parameters either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# With a KV cache every call has a new key length. cuDNN's attention builds an execution plan per
# shape (tens of ms each on an H100), so cached calls use the flash / memory-efficient kernels.
CACHED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

ROPE_BASE = 10000.0


def rotary(x: torch.Tensor, pos: int) -> torch.Tensor:
    """Rotate pairs ``(x_{2i}, x_{2i+1})`` of x (B, H, T, d) by ``(pos + t) θ_i``."""
    d, dtype = x.shape[-1], torch.promote_types(x.dtype, torch.float32)  # bf16 angles would drift
    inv_freq = ROPE_BASE ** (-torch.arange(0, d, 2, device=x.device, dtype=dtype) / d)
    angles = torch.arange(pos, pos + x.shape[-2], device=x.device, dtype=dtype)[:, None] * inv_freq
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

    def forward(self, x: torch.Tensor, pos: int, cache: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, d_model) at absolute positions pos.. → (y, (keys, values) including the past)."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, pos), rotary(k, pos)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
            past = k.shape[2] - length
            # SDPA's is_causal aligns the mask top-left; with a cache, query t sees keys <= past + t
            # (a single new token sees every key: no mask).
            mask = None if length == 1 else (
                torch.arange(k.shape[2], device=x.device) <= past + torch.arange(length, device=x.device)[:, None])
            with sdpa_kernel(CACHED_BACKENDS):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, -1)), (k, v)
