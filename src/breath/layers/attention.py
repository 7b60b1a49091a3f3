"""Causal softmax self-attention with rotary positions and a KV cache (the Transformer baseline).

``softmax(q kᵀ/√d + causal mask) v`` through ``scaled_dot_product_attention`` (flash kernels on GPU).
Rotary embeddings rotate q and k by position-dependent angles ``p · θ_i``, ``θ_i = 10000^{−2i/d}``,
computed for any absolute position, so the baseline has no per-position parameters either.

The KV cache is a pair of preallocated buffers (B, H, capacity, d): a continued call writes its
keys and values in place at their positions (no copy of the past) and attends over the whole
buffer, so a one-token step has the same shapes at every position (a CUDA graph can replay it).
A one-token step runs :func:`~breath.ops.decode_attention.decode_attention`, split-KV attention
over the filled slots with the length read from a device tensor (the Triton kernels on a GPU: SDPA
with a mask would run one program per head there); a call of several tokens runs SDPA with a
length mask ``key slot ≤ query position``. Slots past the sequence hold zeros and get zero
weight. The buffers are shared by the states of one sequence: continuing from a state overwrites
the slots after its position in every state derived from it (as in any KV cache).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from breath.ops.decode_attention import decode_attention

# cuDNN's attention builds an execution plan per shape (tens of ms each on an H100), and a cache's
# capacity changes when it grows, so cached calls use the other kernels (the mask rules out flash).
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
    return _rotation_at(torch.arange(pos, pos + length, device=device), dim, dtype)


def _rotation_at(positions: torch.Tensor, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin±)`` at the (length,) ``positions`` (see :func:`rotation`)."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, dim, 2, device=positions.device, dtype=dtype) / dim)
    angles = positions.to(dtype)[:, None] * inv_freq
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


def rotary(x: torch.Tensor, pos: int | torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Rotate pairs ``(x_{2i}, x_{2i+1})`` of x's last axis by ``(pos + t) θ_i``, t the index along axis
    ``dim`` (negative)::

        (x_{2i}, x_{2i+1}) ← (x_{2i} cos − x_{2i+1} sin,  x_{2i+1} cos + x_{2i} sin)
                           =  x ⊙ cos + swap(x) ⊙ sin±

    in float32 at least (bf16 angles would drift): on the CPU the same products and sums as rotating
    each pair apart, bit for bit; on CUDA one fused kernel (equal to float32 rounding).
    ``pos`` may instead be a (T,) device tensor of positions (the decoder's one-token step, replayed
    from a CUDA graph): then the angles are computed from it and the plain rotation runs.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    if isinstance(pos, torch.Tensor):
        cos, sin = _rotation_at(pos, x.shape[-1], dtype)
    else:
        cos, sin = rotation(pos, x.shape[dim], x.shape[-1], x.device, dtype)
    shape = (x.shape[dim], *[1] * (-dim - 2), x.shape[-1])
    cos, sin = cos.view(shape), sin.view(shape)
    fused = fuse_rotation(x) and not isinstance(pos, torch.Tensor)
    return (fused_rotate if fused else rotate)(x, cos, sin)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float, use_triton: str = "auto"):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.use_triton = use_triton  # the one-token cached step's kernels (auto | on | off)
        self.qkv = nn.Linear(d_model, 3 * num_heads * head_dim, bias=False)
        self.out = nn.Linear(num_heads * head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, pos: int, cache: tuple[torch.Tensor, torch.Tensor] | None,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, d_model) at absolute positions pos.. (or ``positions``, a (T,) device tensor) →
        (y, (keys, values)): without a cache, those of x; with one, its buffers written in place."""
        batch, length, _ = x.shape
        # unbind, not indexing: its backward is one stack, not zero-filled copies per slice. q and k are
        # rotated apart, in the projection's (B, T, H, d) layout, so the returned k holds only itself.
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        at = pos if positions is None else positions
        q, k, v = rotary(q, at, dim=-3).transpose(1, 2), rotary(k, at, dim=-3).transpose(1, 2), v.transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
            return self.out(y.transpose(1, 2).reshape(batch, length, -1)), (k, v)
        if positions is None:
            positions = torch.arange(pos, pos + length, device=x.device)
        if pos + length > cache[0].shape[2]:  # no room: grow, doubling (amortised O(1) per token)
            cache = reserve_cache(cache, pos, max(pos + length, 2 * cache[0].shape[2]))
        keys, values = cache
        keys.index_copy_(2, positions, k.to(keys.dtype))
        values.index_copy_(2, positions, v.to(values.dtype))
        if length == 1 and dropout == 0.0:  # the decode step: filled length = position + 1, on the device
            y = decode_attention(q, keys, values, positions[-1:] + 1, use_triton=self.use_triton)
        else:
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
