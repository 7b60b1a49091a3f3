"""Attention of one query over a KV cache (breath.ops.decode_attention): the reference against the
equation, the split-KV Triton kernels against the reference, the ``use_triton`` errors, and the
transformer's one-token step on the kernels.

Without a GPU the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here, before
triton is imported (breath.ops.decode_attention_triton is imported lazily, on the first Triton call).
The production shape (8 heads of 64) at small capacities: the interpreter runs every program in numpy.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from breath.ops.backend import triton_available  # noqa: E402
from breath.ops.decode_attention import decode_attention, decode_attention_reference  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
HEADS, DIM = 8, 64


def cache(B, capacity, length, dtype=torch.float32, garbage=1e4, seed=0):
    """q (B, H, 1, d), keys and values (B, H, capacity, d) whose slots ≥ length hold ``garbage``
    times random values (NaN: poison the kernels must never read)."""
    g = torch.Generator().manual_seed(seed)
    q, keys, values = (torch.randn(B, HEADS, n, DIM, generator=g) for n in (1, capacity, capacity))
    for x in (keys, values):
        x[:, :, length:] = garbage * torch.randn(x[:, :, length:].shape, generator=g)
    return [x.to(DEV, dtype) for x in (q, keys, values)]


def exact(q, keys, values, length: int) -> torch.Tensor:
    """A plain float64 softmax over the first ``length`` slots."""
    q, k, v = (x.double() for x in (q, keys[:, :, :length], values[:, :, :length]))
    return torch.softmax(q @ k.transpose(-1, -2) / DIM**0.5, dim=-1) @ v


@pytest.mark.parametrize("length", [1, 7, 40])
def test_reference_is_the_softmax_over_the_filled_slots(length, close_to_scale):
    """Large values past the length do not matter; the length may be 0-dim or (1,), int32 or int64."""
    q, keys, values = cache(2, 40, length, torch.float64)
    expected = exact(q, keys, values, length)
    for L in (torch.tensor(length), torch.tensor([length], dtype=torch.int32)):
        close_to_scale(decode_attention_reference(q, keys, values, L.to(DEV)), expected, 1e-12)
    y = decode_attention_reference(q.float(), keys.bfloat16(), values.bfloat16(), torch.tensor(length, device=DEV))
    assert y.dtype == torch.float32  # q's dtype; the products in fp32
    close_to_scale(y.double(), exact(q, keys.bfloat16(), values.bfloat16(), length), 1e-6)


def kernel_matches(q, keys, values, lengths, split, close_to_scale):
    """The kernels (slots per split ``split``; None: the default) against the float64 equation at each
    filled length; NaN past the length."""
    from breath.ops.decode_attention_triton import decode_attention_launch

    for length in lengths:
        poisoned = [x.clone() for x in (keys, values)]
        for x in poisoned:
            x[:, :, length:] = float("nan")
        y = decode_attention_launch(q, *poisoned, torch.tensor(length, device=DEV), split)
        assert y.dtype == q.dtype and y.is_contiguous()
        # bf16: y is rounded once, to one ulp (2^-7 of the value at most; Triton's interpreter truncates
        # where CUDA rounds to nearest)
        close_to_scale(y.double(), exact(q, keys, values, length), 2**-7 if q.dtype == torch.bfloat16 else 1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 2])
def test_kernels_match_the_equation(B, dtype, close_to_scale):
    """Capacity 300 in splits of 128 slots (two blocks of 64): lengths inside the first split, on
    and across a block's end, across all three splits (the last one ragged)."""
    q, keys, values = cache(B, 300, 300, dtype)
    kernel_matches(q, keys, values, [1, 63, 64, 65, 299, 300], 128, close_to_scale)


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_match_the_equation_at_capacity_2048(dtype, close_to_scale):
    """Four splits of 512 at batch 1 (a length inside the first, one across all four: block edges are
    the capacity-300 test's); then 32 splits of one block each, and the default (on the CPU one
    split) at batch 2."""
    q, keys, values = cache(1, 2048, 2048, dtype, seed=1)
    kernel_matches(q, keys, values, [65, 2047], 512, close_to_scale)
    q, keys, values = cache(2, 2048, 2048, dtype, seed=2)
    kernel_matches(q, keys, values, [1000], 64, close_to_scale)
    kernel_matches(q, keys, values, [2047], None, close_to_scale)


@needs_triton
def test_kernels_take_any_strides(close_to_scale):
    """q, keys and values as views of (B, T, H, d) layouts (the attention layer's q is one)."""
    q, keys, values = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in cache(2, 100, 100, seed=3))
    assert not keys.is_contiguous()
    kernel_matches(q, keys, values, [77], 64, close_to_scale)


def test_split_size_depends_on_the_shapes_only(monkeypatch):
    """~4 programs per SM (132 SMs, as an H100), in multiples of 64 slots, at least one block."""
    from breath.ops import decode_attention_triton as kernels

    monkeypatch.setattr(kernels, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda")
    assert kernels.split_size(32768 + 256, 8, cuda) == 512  # 65 splits: 520 programs at batch 1
    assert kernels.split_size(32768 + 256, 64 * 8, cuda) == 16512  # 2 splits at batch 64
    assert kernels.split_size(100, 8, cuda) == 64
    with pytest.raises(ValueError, match="^split: got 100; allowed: a positive multiple of 64"):
        kernels.decode_attention_launch(*cache(1, 100, 100), torch.tensor(100), split=100)


def test_arguments_are_checked(monkeypatch):
    q, keys, values = cache(1, 16, 16)
    length = torch.tensor(16, device=DEV)
    with pytest.raises(ValueError, match="^use_triton: got 'yes'"):
        decode_attention(q, keys, values, length, use_triton="yes")
    with pytest.raises(ValueError, match=r"^q: got shape \(1, 8, 2, 64\)"):
        decode_attention(torch.cat((q, q), 2), keys, values, length)
    with pytest.raises(ValueError, match=r"^values: got shape \(1, 8, 15, 64\)"):
        decode_attention(q, keys, values[:, :, 1:], length)
    with pytest.raises(ValueError, match="^length: got torch.float32"):
        decode_attention(q, keys, values, length.float())
    with pytest.raises(ValueError, match="^length: got torch.int64 of shape"):
        decode_attention(q, keys, values, torch.tensor([16, 16], device=DEV))


@needs_triton
def test_kernels_asked_for_where_they_cannot_run_say_why(monkeypatch):
    q, keys, values = cache(1, 16, 16)
    length = torch.tensor(16, device=DEV)
    with pytest.raises(ValueError, match="head_dim in .* not 8"):
        decode_attention(q[..., :8], keys[..., :8], values[..., :8], length, use_triton="on")
    with pytest.raises(ValueError, match="bf16, fp16 or fp32"):
        decode_attention(q.double(), keys.double(), values.double(), length, use_triton="on")
    with pytest.raises(ValueError, match="no backward"):
        decode_attention(q.requires_grad_(), keys, values, length, use_triton="on")
    if DEV == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(RuntimeError, match="^decode_attention: use_triton='on' needs CUDA tensors, or "
                                               "TRITON_INTERPRET=1"):
            decode_attention(q.detach(), keys, values, length, use_triton="on")


@needs_triton
@torch.no_grad()
def test_transformer_decode_steps_on_the_kernels(tiny_model, monkeypatch):
    """A prefill, then one-token steps into a cache reserved past them (slots past the length hold
    zeros): ``use_triton="on"`` gives the "off" model's logits to fp32 rounding, and runs the kernels."""
    from breath.ops import decode_attention_triton as kernels

    launches = []
    launch = kernels.decode_attention_launch
    monkeypatch.setattr(kernels, "decode_attention_launch", lambda *a: launches.append(1) or launch(*a))
    models = [tiny_model("transformer", head_dim=16, use_triton=mode).eval().to(DEV) for mode in ("on", "off")]
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1)).to(DEV)
    states = [model.reserve(model(ids[:, :5]).state, 20) for model in models]
    for t in range(5, 12):
        outs = [model(ids[:, t:t + 1], state=state) for model, state in zip(models, states)]
        torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=1e-5, atol=1e-5)
        states = [out.state for out in outs]
    assert len(launches) == 7 * 2  # every step, every layer
