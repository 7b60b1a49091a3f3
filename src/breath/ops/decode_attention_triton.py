"""Triton split-KV ("flash-decoding") attention of one query token over a KV cache.

Computes what :func:`breath.ops.decode_attention.decode_attention_reference` computes (see that
module's docstring for the equation and the split-KV method), in fp32, for q, keys, values in bf16,
fp16 or fp32 with any strides; y comes back contiguous in q's dtype.

Kernels.

* ``_split_kernel``, grid (B·H, n_splits): program (bh, j) reads keys and values
  [j·S, min((j + 1)·S, L)) in tiles of BLOCK slots, L loaded from the device, and runs the online
  softmax over them (exp2 of scores pre-multiplied by log2(e)/√d: one multiply per score, and exp2 is
  the hardware instruction). It writes its (m_j, l_j, acc_j) to fp32 scratch. Its loop bound is
  dynamic, so a split past L loads nothing and writes (−∞, 0, 0): one launch serves every length.
* ``_combine_kernel``, grid (B·H,): m* = max_j m_j, then y = Σ_j 2^{m_j − m*} acc_j / Σ_j 2^{m_j − m*} l_j
  over the splits in blocks of COMBINE_BLOCK (their number depends on the shapes).

The split size is a host-side function of the static shapes (capacity, B·H, the GPU's SM count),
never of L: a CUDA graph captured once replays correctly at every length, and results do not depend
on the launch history. No autotuning, for the same reasons (capture, determinism). The op is
registered as ``breath::decode_attention`` so that ``torch.compile`` sees one opaque node; eager calls
run the launcher directly (a custom op's Python dispatch costs more host time per call).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

# Keys per tile: a (64, d ≤ 128) tile of keys and one of values per iteration keep a 4-warp program's
# registers in check at d = 128, and 64-slot granularity wastes little at the end of a split.
BLOCK = 64
NUM_WARPS = 4
# Programs per SM the split size aims for: a memory-bound kernel needs several resident programs per
# SM to keep enough loads in flight (B·H alone is 8 programs at batch 1, for 132 SMs).
PROGRAMS_PER_SM = 4
COMBINE_BLOCK = 16  # splits per iteration of the combine
LOG2E = 1.4426950408889634


@triton.jit
def _split_kernel(q_ptr, k_ptr, v_ptr, length_ptr, m_ptr, l_ptr, acc_ptr, H, split_size, n_splits, qk_scale,
                  sq_b, sq_h, sq_d, sk_b, sk_h, sk_s, sk_d, sv_b, sv_h, sv_s, sv_d,
                  D: tl.constexpr, BLOCK: tl.constexpr):
    """(m, l, acc) of split j of head (b, h): the online softmax over its filled slots (log2 units)."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + d * sq_d).to(tl.float32) * qk_scale
    start = split * split_size
    end = tl.minimum(start + split_size, tl.load(length_ptr).to(tl.int32))
    k_base, v_base = k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h
    m = -float("inf")
    l = 0.0
    acc = tl.zeros((D,), dtype=tl.float32)
    for s0 in range(start, end, BLOCK):  # no iteration when the split starts at or past L
        s = s0 + tl.arange(0, BLOCK)
        valid = s < end
        rows = s.to(tl.int64)[:, None]  # slot × stride can pass 2^31 in a large cache
        k = tl.load(k_base + rows * sk_s + d[None, :] * sk_d, mask=valid[:, None], other=0.0).to(tl.float32)
        v = tl.load(v_base + rows * sv_s + d[None, :] * sv_d, mask=valid[:, None], other=0.0).to(tl.float32)
        # One query: a reduction, not tl.dot (whose tiles need ≥ 16 rows).
        scores = tl.where(valid, tl.sum(q[None, :] * k, 1), -float("inf"))
        m_new = tl.maximum(m, tl.max(scores, 0))  # finite: the tile holds at least one valid slot
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new)
        l = l * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m = m_new
    out = bh.to(tl.int64) * n_splits + split
    tl.store(m_ptr + out, m)
    tl.store(l_ptr + out, l)
    tl.store(acc_ptr + out * D + d, acc)


@triton.jit
def _combine_kernel(m_ptr, l_ptr, acc_ptr, y_ptr, n_splits, D: tl.constexpr, SPLITS: tl.constexpr):
    """y of head bh from its splits' partial (m, l, acc)."""
    base = tl.program_id(0).to(tl.int64) * n_splits
    d = tl.arange(0, D)
    m_star = -float("inf")
    for j0 in range(0, n_splits, SPLITS):
        j = j0 + tl.arange(0, SPLITS)
        m_star = tl.maximum(m_star, tl.max(tl.load(m_ptr + base + j, mask=j < n_splits, other=-float("inf")), 0))
    num = tl.zeros((D,), dtype=tl.float32)
    den = 0.0
    for j0 in range(0, n_splits, SPLITS):
        j = j0 + tl.arange(0, SPLITS)
        live = j < n_splits
        # m* is finite (split 0 holds slot 0, and L ≥ 1); an empty split's 2^{−∞} is 0
        w = tl.exp2(tl.load(m_ptr + base + j, mask=live, other=-float("inf")) - m_star)
        den += tl.sum(w * tl.load(l_ptr + base + j, mask=live, other=0.0), 0)
        acc = tl.load(acc_ptr + (base + j)[:, None] * D + d[None, :], mask=live[:, None], other=0.0)
        num += tl.sum(w[:, None] * acc, 0)
    tl.store(y_ptr + tl.program_id(0).to(tl.int64) * D + d, (num / den).to(y_ptr.dtype.element_ty))


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_size(capacity: int, heads: int, device: torch.device) -> int:
    """Slots per split for a cache of ``capacity`` slots and ``heads`` = B·H query heads: enough
    splits that B·H·n_splits fills about PROGRAMS_PER_SM programs per SM (one SM stands in on the
    CPU's interpreter), as a multiple of BLOCK. Static shapes only, never the filled length."""
    sms = _sm_count(device.index or 0) if device.type == "cuda" else 1
    splits = max(1, math.ceil(PROGRAMS_PER_SM * sms / heads))
    return max(BLOCK, triton.cdiv(triton.cdiv(capacity, splits), BLOCK) * BLOCK)


def decode_attention_launch(q: Tensor, keys: Tensor, values: Tensor, length: Tensor,
                            split: int | None = None) -> Tensor:
    """y (B, H, 1, d), contiguous, in q's dtype. ``split``: slots per split, a multiple of BLOCK
    (None: :func:`split_size`); the tests force small ones to exercise many splits."""
    B, H, capacity, D = keys.shape
    split = split_size(capacity, B * H, q.device) if split is None else split
    if split <= 0 or split % BLOCK:
        raise ValueError(f"split: got {split}; allowed: a positive multiple of {BLOCK}")
    n_splits = triton.cdiv(capacity, split)
    m = torch.empty(B * H, n_splits, dtype=torch.float32, device=q.device)
    l = torch.empty_like(m)
    acc = torch.empty(B * H, n_splits, D, dtype=torch.float32, device=q.device)
    _split_kernel[(B * H, n_splits)](
        q, keys, values, length, m, l, acc, H, split, n_splits, LOG2E / math.sqrt(D),
        q.stride(0), q.stride(1), q.stride(3), *keys.stride(), *values.stride(),
        D=D, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    y = torch.empty(B, H, 1, D, dtype=q.dtype, device=q.device)
    _combine_kernel[(B * H,)](m, l, acc, y, n_splits, D=D, SPLITS=COMBINE_BLOCK, num_warps=NUM_WARPS)
    return y


@torch.library.custom_op("breath::decode_attention", mutates_args=())
def _decode_attention_op(q: Tensor, keys: Tensor, values: Tensor, length: Tensor) -> Tensor:
    return decode_attention_launch(q, keys, values, length)


@_decode_attention_op.register_fake
def _(q, keys, values, length):
    return q.new_empty(q.shape[0], q.shape[1], 1, q.shape[3])


def decode_attention_triton(q: Tensor, keys: Tensor, values: Tensor, length: Tensor) -> Tensor:
    """The Triton path of :func:`breath.ops.decode_attention.decode_attention` (same contract, shapes
    checked there; fp32 accumulation; no backward)."""
    if torch.compiler.is_compiling():
        return _decode_attention_op(q, keys, values, length)
    return decode_attention_launch(q, keys, values, length)
