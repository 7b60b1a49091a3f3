"""Attention of one query token over a preallocated KV cache: the PyTorch reference and the dispatch
to the split-KV Triton kernels.

For each batch row b and head h, with L the filled length of the cache (a device tensor, so a CUDA
graph captured at one length replays at every other):

    y = Σ_{s<L} softmax_s(q·k_s / √d) v_s

Slots s ≥ L are ignored: the kernels never read them, whatever they hold; the reference gives them
weight exactly 0, which ignores any finite value (the layer's buffers are zero-filled, and a slot
past L holds at worst an older continuation's key and value). Zeroing them too, to ignore NaN,
would cost the reference a pass over the values (4x its time on the CPU).

Split-KV ("flash-decoding"). One program per (b, h) would leave most of a GPU idle at batch 1, so
the slots are cut into splits of S keys, one program per (b, h, split). Each split j keeps a
running maximum m_j of its scores, the sum l_j = Σ_s e^{score_s − m_j} and the vector
acc_j = Σ_s e^{score_s − m_j} v_s (an online softmax over its tiles of keys); a split wholly past L
has m_j = −∞, l_j = 0, acc_j = 0. Then

    m* = max_j m_j,        y = Σ_j e^{m_j − m*} acc_j / Σ_j e^{m_j − m*} l_j

S depends on the static shapes only (see :func:`breath.ops.decode_attention_triton.split_size`),
so the launch is the same at every length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from breath.ops.backend import kernels_fit, note_fallback, require_kernels, triton_mode

KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
KERNEL_HEAD_DIMS = (16, 32, 64, 128)  # powers of two (tl.arange), up to what one program holds


def decode_attention_reference(q: Tensor, keys: Tensor, values: Tensor, length: Tensor) -> Tensor:
    """The equation in PyTorch, in fp32 (float64 inputs: float64), returned in q's dtype. No host sync:
    the slots are masked against ``length`` on the device; slots ≥ L must hold finite values."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    valid = torch.arange(keys.shape[2], device=keys.device) < length.reshape(())  # (capacity,)
    # Autocast off: it would run the products in bf16.
    with torch.autocast(q.device.type, enabled=False):
        scores = q.to(dtype) @ keys.to(dtype).transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, 1, capacity)
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)  # exactly 0 at slots ≥ L
        y = weights @ values.to(dtype)
    return y.to(q.dtype)


def _check(q: Tensor, keys: Tensor, values: Tensor, length: Tensor) -> None:
    if q.dim() != 4 or q.shape[2] != 1:
        raise ValueError(f"q: got shape {tuple(q.shape)}; allowed: (B, H, 1, d)")
    expected = (*q.shape[:2], keys.shape[2] if keys.dim() == 4 else "capacity", q.shape[3])
    for name, x in (("keys", keys), ("values", values)):
        if x.dim() != 4 or x.shape != keys.shape or x.shape[:2] != q.shape[:2] or x.shape[3] != q.shape[3]:
            raise ValueError(f"{name}: got shape {tuple(x.shape)}; allowed: (B, H, capacity, d) = {expected}, "
                             "the same for keys and values")
    if length.numel() != 1 or length.dim() > 1 or length.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"length: got {length.dtype} of shape {tuple(length.shape)}; allowed: one int32 or "
                         "int64 element, shape () or (1,)")
    if length.device != q.device:
        raise ValueError(f"length: got a tensor on {length.device}; allowed: q's device, {q.device}")


def _kernel_unfit(q: Tensor, keys: Tensor, values: Tensor) -> str | None:
    """Why the kernels do not compile for these inputs, or None when they do."""
    dtypes = {x.dtype for x in (q, keys, values)}
    if not dtypes <= set(KERNEL_DTYPES):
        return f"the decode-attention kernels take bf16, fp16 or fp32, not {sorted(map(str, dtypes))}"
    if q.shape[-1] not in KERNEL_HEAD_DIMS:
        return f"the decode-attention kernels compile for head_dim in {KERNEL_HEAD_DIMS}, not {q.shape[-1]}"
    return None


def decode_attention(q: Tensor, keys: Tensor, values: Tensor, length: Tensor,
                     use_triton: str | bool | None = "auto") -> Tensor:
    """Attention of one query over the first ``length`` slots of a KV cache (see the module docstring).

    Args:
        q: (B, H, 1, d).
        keys, values: (B, H, capacity, d), any strides.
        length: int32 or int64 tensor of one element (shape () or (1,)) on q's device, the filled
            length L, 1 ≤ L ≤ capacity (not checked: that would sync with the host).
        use_triton: "on" runs the split-KV Triton kernels (:mod:`breath.ops.decode_attention_triton`:
            fp32 accumulation; CUDA tensors, or CPU under ``TRITON_INTERPRET=1``; no backward);
            "off" the PyTorch reference; "auto" the kernels when ``backend.kernels_fit(q)``, the
            dtypes and head_dim are among theirs and no gradient is needed, else the reference.

    Returns:
        y (B, H, 1, d) in q's dtype.
    """
    _check(q, keys, values, length)
    mode = triton_mode(use_triton)
    unfit = _kernel_unfit(q, keys, values)
    # The kernels have no backward: a step that needs gradients runs the reference.
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, keys, values)):
        unfit = unfit or "the decode-attention kernels have no backward, and these inputs require gradients"
    if mode == "auto":
        fits = kernels_fit(q)
        if fits and unfit:
            note_fallback(unfit)
        mode = "on" if fits and not unfit else "off"
    if mode == "on":
        require_kernels(q, "decode_attention")
        if unfit:
            raise ValueError(f"decode_attention: use_triton='on' but {unfit}; use use_triton='auto' or 'off'")
        # Imported here: tests set TRITON_INTERPRET before triton is first imported.
        from breath.ops.decode_attention_triton import decode_attention_triton

        return decode_attention_triton(q, keys, values, length)
    return decode_attention_reference(q, keys, values, length)
