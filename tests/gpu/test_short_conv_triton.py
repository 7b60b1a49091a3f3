"""On a GPU: the short-convolution Triton kernels at full shapes (skipped without one). The accuracy
part of what was benchmarks/gpu_check_short_conv.py (its timings are benchmarks/short_conv_speed.py).

    PYTHONPATH=src python -m pytest -q -s -m gpu tests/gpu/test_short_conv_triton.py

x (B 32, T 1024, C 1536) in bf16 and fp32, taps (C, 4) in fp32 (as under autocast), with and
without a tail, and a loss Σ y·dy: y, dx, dW and dtail of the Triton op against autograd of the
PyTorch reference in float64 (ground truth), as max |got − exact| / max |exact|. The outputs must be
finite, in the reference's dtype, and two backward runs must agree bit for bit; every tile the
speed script times must compute the same function.
"""

import pytest
import torch

from breath.ops.short_conv import short_conv, short_conv_reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# Relative to the largest exact entry. fp32: accumulation in fp32 (dW sums B·T = 32768 products).
# bf16: y, dx and dtail are rounded once to bf16 (half an ulp is 2^-9 of the value).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2**-8}
NAMES = ("y", "dx", "dW", "dtail")


@pytest.fixture(scope="module")
def inputs():
    """The speed script's inputs: (x, weight, tail or None, dy) of a dtype, with or without a tail.
    Imported when a test runs: it imports triton, which the CPU tests import in interpreter mode."""
    from benchmarks.short_conv_speed import inputs

    return inputs


def outputs_and_grads(conv, x, weight, tail, dy):
    """(y, dx, dW, dtail or None) for the loss Σ y·dy."""
    leaves = [x.detach().requires_grad_(), weight.detach().requires_grad_()]
    if tail is not None:
        leaves.append(tail.detach().requires_grad_())
    y, _ = conv(*leaves[:2], leaves[2] if tail is not None else None)
    grads = torch.autograd.grad(y, leaves, dy.to(y.dtype))
    return [y.detach(), *grads] + ([None] if tail is None else [])


def exact(args):
    return outputs_and_grads(short_conv_reference, *(a if a is None else a.double() for a in args))


def rel_err(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double() - exact).abs().max() / exact.abs().max()).item()


@pytest.mark.parametrize("with_tail", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_matches_the_float64_reference_and_repeats_bitwise(dtype, with_tail, inputs):
    args = inputs(dtype, with_tail)
    truth, same_dtype = exact(args), outputs_and_grads(short_conv_reference, *args)
    got = outputs_and_grads(lambda *a: short_conv(*a, use_triton=True), *args)
    again = outputs_and_grads(lambda *a: short_conv(*a, use_triton=True), *args)
    for name, a, r, e, a2 in zip(NAMES, got, same_dtype, truth, again):
        if e is None:
            continue
        print(f"\n{str(dtype)[6:]} tail={with_tail} {name}: triton {rel_err(a, e):.2e}, "
              f"reference in {str(r.dtype)[6:]} {rel_err(r, e):.2e}", end="")
        assert rel_err(a, e) <= TOLERANCE[dtype], name
        assert a.dtype == r.dtype and bool(torch.isfinite(a).all()), name
        assert torch.equal(a, a2), f"{name}: two runs differ"


@pytest.mark.parametrize("block_t, block_c, num_warps", [(32, 128, 4), (16, 128, 4), (64, 128, 4), (128, 128, 4),
                                                         (64, 64, 4), (64, 128, 8), (32, 256, 4)])
def test_every_launch_setting_computes_the_same_function(block_t, block_c, num_warps, inputs):
    from breath.ops.short_conv_triton import LaunchSettings, backward_launch, forward_launch

    launch = LaunchSettings(block_t, block_c, num_warps)
    x, weight, tail, dy = args = inputs(torch.bfloat16, True)
    truth = exact(args)
    y = forward_launch(x, weight, tail, launch)
    dx, dw, dtail = backward_launch(dy.bfloat16(), x, weight, tail, launch)
    for name, got, e in zip(NAMES, (y, dx, dw, dtail), truth):
        assert rel_err(got, e) <= TOLERANCE[torch.bfloat16], f"{launch}: {name} {rel_err(got, e):.2e}"
