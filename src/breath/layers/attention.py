"""Causal softmax self-attention with rotary positions and a KV cache (the Transformer baseline).

``softmax(q kᵀ/√d + causal mask) v`` through ``scaled_dot_product_attention`` (flash kernels on GPU).
Rotary embeddings rotate q and k by position-dependent angles ``p · θ_i``, ``θ_i = 10000^{−2i/d}``,
computed for any absolute position, so the baseline has no per-position parameters either.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

# With a KV cache every call has a new key length. cuDNN's attention builds an execution plan per
# shape (tens of ms each on an H100), so cached calls use the flash / memory-efficient kernels.
CACHED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

ROPE_BASE = 10000.0


def rotation(pos: int, length: int, dim: int, device: torch.device, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin±)``, each (length, dim): ``cos((pos + t) θ_i)`` at both entries of pair i, and
    ``sin((pos + t) θ_i)`` signed ``(−, +)``. Eager calls share them through a small cache (every layer
    of a forward asks for the same ones)."""
    if torch.compiler.is_compiling():  # compiled graphs compute them in place (and fuse them)
        return _rotation(pos, length, dim, device, dtype)
    # Inference-mode tensors cannot be saved for backward: cache them apart from ordinary ones.
    return _cached_rotation(pos, length, dim, device, dtype, torch.is_inference_mode_enabled())


def _rotation(pos: int, length: int, dim: int, device: torch.device, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = ROPE_BASE ** (-torch.arange(0, dim, 2, device=device, dtype=dtype) / dim)
    angles = torch.arange(pos, pos + length, device=device, dtype=dtype)[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)


@functools.lru_cache(maxsize=16)
def _cached_rotation(pos, length, dim, device, dtype, inference: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _rotation(pos, length, dim, device, dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x ⊙ cos + swap(x) ⊙ sin±`` in cos's precision, cast back to x's dtype; swap exchanges the two
    entries of each pair of x's last axis."""
    wide = x.to(cos.dtype)  # x's gradient then sums its two terms before its one rounding to x's dtype
    swapped = wide.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (wide * cos + swapped * sin).to(x.dtype)


def fused_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``rotate`` compiled: what eager CUDA runs, one fused kernel forward and one backward instead of six
    passes over float32 temporaries each way (the gap to a plain GPT, issue 14). Compiled once for all
    shapes, at the first call; a model compiled as a whole fuses the plain function itself."""
    return _compiled_rotate()(x, cos, sin)


@functools.cache
def _compiled_rotate():
    return torch.compile(rotate, dynamic=True, fullgraph=True)  # at first use: the compiler takes seconds to import


def fuse_rotation(x: torch.Tensor) -> bool:
    """Eager CUDA, outside a compiled graph and outside dispatch modes (operator or FLOP counters):
    Dynamo compiles nothing under those, so they see (and count) the plain rotation."""
    return x.is_cuda and not torch.compiler.is_compiling() and not is_in_torch_dispatch_mode()


def rotary(x: torch.Tensor, pos: int, dim: int = -2) -> torch.Tensor:
    """Rotate pairs ``(x_{2i}, x_{2i+1})`` of x's last axis by ``(pos + t) θ_i``, t the index along axis
    ``dim`` (negative)::

        (x_{2i}, x_{2i+1}) ← (x_{2i} cos − x_{2i+1} sin,  x_{2i+1} cos + x_{2i} sin)
                           =  x ⊙ cos + swap(x) ⊙ sin±

    in float32 at least (bf16 angles would drift): on the CPU the same products and sums as rotating
    each pair apart, bit for bit; on CUDA one fused kernel (equal to float32 rounding).
    """
    cos, sin = rotation(pos, x.shape[dim], x.shape[-1], x.device, torch.promote_types(x.dtype, torch.float32))
    shape = (x.shape[dim], *[1] * (-dim - 2), x.shape[-1])
    cos, sin = cos.view(shape), sin.view(shape)
    return (fused_rotate if fuse_rotation(x) else rotate)(x, cos, sin)


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
        # unbind, not indexing: its backward is one stack, not zero-filled copies per slice. q and k are
        # rotated apart, in the projection's (B, T, H, d) layout, so the returned k holds only itself.
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        q, k, v = rotary(q, pos, dim=-3).transpose(1, 2), rotary(k, pos, dim=-3).transpose(1, 2), v.transpose(1, 2)
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
