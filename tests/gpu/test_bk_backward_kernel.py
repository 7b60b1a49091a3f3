"""GPU: the BK backward kernel compiled natively in both its forms — the chunked scan's first pass
(``AFFINE``: per-chunk affine summaries) and the gradient replay — against the sequential kernel,
at the shapes the chunked scan is for (few chains, long sequences), for every UNROLL.

    PYTHONPATH=src python -m pytest -q tests/gpu/test_bk_backward_kernel.py

The chunked result equals the sequential one to float32 rounding (module docstring of
ops/bk_resolvent_triton.py), so both are compared relative to the gradients' scale.
"""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def model_like(N, T, seed):
    """Time-major real views e (T, N, 2), β (T−1, N, 2), σ (N, 2): e = z − a with Im z > 0 and the
    dissipative a = V − iΓ, β = h² > 0, σ in the upper half plane (a continued state)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    e = torch.stack([torch.randn(T, N, device="cuda", generator=g),
                     0.1 + 0.01 + 0.05 * torch.rand(T, N, device="cuda", generator=g)], -1)
    beta = torch.stack([0.25 + torch.rand(T - 1, N, device="cuda", generator=g), torch.zeros(T - 1, N, device="cuda")], -1)
    sigma = torch.stack([torch.randn(N, device="cuda", generator=g), torch.rand(N, device="cuda", generator=g)], -1)
    return e, beta, sigma


def grads(e, beta, sigma, w, **launch):
    # Imported here: collected without a GPU, importing triton now would precede the CPU tests'
    # TRITON_INTERPRET=1.
    from breath.ops.bk_resolvent_triton import bk_causal_triton_real

    xs = [x.clone().requires_grad_() for x in (e, beta, sigma)]
    g = bk_causal_triton_real(*xs, **launch)
    (g * w).sum().backward()
    return [g.detach()] + [x.grad for x in xs]


@pytest.mark.parametrize("N, T, chunk", [(32, 8192, 64), (8, 32768, 128), (256, 1024, 32), (32, 8200, 64)])
@pytest.mark.parametrize("unroll", [1, 2, 4, 8])
def test_chunked_backward_matches_sequential(N, T, chunk, unroll):
    e, beta, sigma = model_like(N, T, seed=N + T)
    w = torch.randn(e.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    sequential = grads(e, beta, sigma, w, unroll=unroll, chunk=0)
    chunked = grads(e, beta, sigma, w, unroll=unroll, chunk=chunk)
    for name, got, ref in zip(("g", "grad_e", "grad_beta", "grad_sigma"), chunked, sequential, strict=True):
        assert torch.isfinite(got).all(), name
        scale = ref.abs().max().item()
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * scale, msg=name)
