"""The memory's short convolution (breath.layers.short_conv, breath.ops.short_conv): the equation,
continuation from its tail, and the Triton kernels against the PyTorch reference.

Without a GPU the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here, before
triton is imported (breath.ops.short_conv_triton is imported lazily, on the first Triton call).
Tiny shapes: the interpreter runs every program in numpy.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from breath.layers.short_conv import ShortConv  # noqa: E402
from breath.ops.backend import triton_available  # noqa: E402
from breath.ops.short_conv import short_conv, short_conv_reference  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def test_each_output_is_silu_of_the_taps_over_the_last_w_inputs():
    torch.manual_seed(0)
    conv, x = ShortConv(5, 3).double(), torch.randn(2, 7, 5, dtype=torch.float64)
    y, tail = conv(x, None)
    padded = torch.cat((torch.zeros(2, 2, 5, dtype=torch.float64), x), dim=1)
    for t in range(7):
        expected = F.silu(sum(conv.weight[:, j] * padded[:, t + j] for j in range(3)))
        torch.testing.assert_close(y[:, t], expected)
    assert torch.equal(tail, x[:, -2:])


@pytest.mark.parametrize("use_triton", [False, pytest.param(True, marks=needs_triton)])
@pytest.mark.parametrize("pieces", [[1] * 6, [1, 5], [4, 2]])
def test_calls_continued_from_the_tail_equal_one_call(pieces, use_triton):
    torch.manual_seed(1)
    conv, x = ShortConv(4, 4, use_triton=use_triton), torch.randn(3, 6, 4)
    if not use_triton:  # the reference in float64: exact to rounding; the kernels take fp32
        conv, x = conv.double(), x.double()
    conv, x = conv.to(DEV), x.to(DEV)
    whole, _ = conv(x, None)
    outs, tail, start = [], None, 0
    for size in pieces:  # pieces shorter than the tail too: the tail then mixes old and new inputs
        y, tail = conv(x[:, start : start + size], tail)
        outs.append(y)
        start += size
    rtol = 1e-12 if x.dtype == torch.float64 else 1e-6
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=rtol, atol=1e-12)


def test_width_below_two_is_refused():
    with pytest.raises(ValueError, match="width must be >= 2"):
        ShortConv(4, 1)


# ----------------------------------------------------------------------------------------------
# Triton kernels against the reference
# ----------------------------------------------------------------------------------------------


def inputs(B, T, C, w, with_tail, seed=0, dtype=torch.float32):
    """x (B, T, C), weight (C, w), tail (B, w − 1, C) or None, and dy (B, T, C) for a loss Σ y·dy."""
    g = torch.Generator().manual_seed(seed)
    x, weight, tail, dy = (torch.randn(*shape, generator=g) for shape in
                           ((B, T, C), (C, w), (B, w - 1, C), (B, T, C)))
    return x.to(DEV, dtype), weight.to(DEV), tail.to(DEV, dtype) if with_tail else None, dy.to(DEV)


def run(conv, x, weight, tail, dy, **kw):
    """(y, new tail, dx, dW, dtail) of conv with a loss Σ y·dy + Σ new_tail (the new tail's gradient
    flows to x and the old tail through torch, outside the kernels)."""
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    tail = None if tail is None else tail.clone().requires_grad_()
    y, tail_new = conv(x, weight, tail, **kw)
    ((y.float() * dy).sum() + tail_new.float().sum()).backward()
    return y, tail_new, x.grad, weight.grad, None if tail is None else tail.grad


@needs_triton
@pytest.mark.parametrize("with_tail", [False, True])
@pytest.mark.parametrize("w", [2, 4])
@pytest.mark.parametrize("C", [6, 40])
@pytest.mark.parametrize("T", [1, 2, 5, 37])
def test_triton_matches_reference_float32(T, C, w, with_tail, close_to_scale):
    """y, the new tail, dx, dW and dtail; T = 1, 2 are shorter than the tail, 37 ends a block ragged."""
    args = inputs(2, T, C, w, with_tail)
    got = run(short_conv, *args, use_triton=True)
    ref = run(short_conv_reference, *(a if a is None else a.double() for a in args))
    for name, a, b in zip(("y", "new_tail", "dx", "dW", "dtail"), got, ref):
        assert (a is None) == (b is None) == (name == "dtail" and not with_tail), name
        if a is not None:
            close_to_scale(a, b.float(), 1e-5)


@needs_triton
def test_triton_launch_blocks(close_to_scale):
    """Several programs along T and C, ragged in both: T = 14 (forward rows; T + w − 1 = 17 rows in
    the backward) and C = 40 over blocks of 8 rows × 16 channels."""
    from breath.ops.short_conv_triton import LaunchSettings, backward_launch, forward_launch

    x, weight, tail, dy = inputs(2, 14, 40, 4, True, seed=2)
    leaves = [a.double().requires_grad_() for a in (x, weight, tail)]
    y, _ = short_conv_reference(*leaves)
    grads = torch.autograd.grad((y * dy.double()).sum(), leaves)
    launch = LaunchSettings(block_t=8, block_c=16)
    close_to_scale(forward_launch(x, weight, tail, launch), y.float(), 1e-5)
    for got, ref in zip(backward_launch(dy, x, weight, tail, launch), grads):
        close_to_scale(got, ref.float(), 1e-5)


@needs_triton
@pytest.mark.parametrize("T, with_tail", [(1, True), (37, False), (37, True)])
def test_triton_bfloat16(T, with_tail, close_to_scale):
    """bf16 x and tail (fp32 weight, as under autocast): the kernels accumulate in fp32 and round
    once; the reference computes in bf16. Both against the float64 ground truth."""
    args = inputs(2, T, 40, 4, with_tail, seed=1, dtype=torch.bfloat16)
    got = run(short_conv, *args, use_triton=True)
    exact = run(short_conv_reference, *(a if a is None else a.double() for a in args))
    for name, a, b in zip(("y", "new_tail", "dx", "dW", "dtail"), got, exact):
        if a is not None:
            assert a.dtype == args[1 if name == "dW" else 0].dtype, name
            close_to_scale(a.double(), b, 2**-7)


@needs_triton
def test_triton_backward_is_deterministic():
    args = inputs(2, 37, 40, 4, True, seed=3)
    first, second = run(short_conv, *args, use_triton=True), run(short_conv, *args, use_triton=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_triton
@pytest.mark.parametrize("with_tail", [False, True])
def test_custom_op_registration(with_tail):
    """Schema, fake implementations and autograd registration of the forward and backward ops."""
    from breath.ops.short_conv_triton import _short_conv

    x, weight, tail, dy = inputs(2, 5, 6, 4, with_tail, seed=4)
    torch.library.opcheck(_short_conv.forward_op, (x.requires_grad_(), weight.requires_grad_(),
                                                   tail if tail is None else tail.requires_grad_()))
    torch.library.opcheck(_short_conv.backward_op, (dy, x.detach(), weight.detach(),
                                                    tail if tail is None else tail.detach()))


@needs_triton
def test_triton_double_backward_raises():
    """The kernels' backward has no graph of its own: a higher-order gradient is refused, not zero."""
    x, weight, tail, _ = inputs(1, 3, 4, 2, False, seed=6)
    y, _ = short_conv(x.requires_grad_(), weight, use_triton=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


@needs_triton
def test_torch_compile_full_graph(compiled_matches_eager):
    """A function calling the op compiles without graph breaks and gives the eager values and grads."""
    x, weight, tail, _ = inputs(2, 5, 6, 4, True, seed=5)

    def f(x):
        y, new = short_conv(2 * x, weight, tail, use_triton=True)
        return y.square().sum() + new.sum()

    compiled_matches_eager(f, x)
