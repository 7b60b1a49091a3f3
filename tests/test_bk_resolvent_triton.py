"""Triton kernels of the causal BK resolvent against the PyTorch reference.

Without a GPU the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here, before
triton is imported (the kernels are decorated when breath.ops.bk_resolvent_triton is first imported,
and nothing imports it before these tests). With a GPU they run natively on CUDA tensors.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not importable: the Triton kernel cannot be tested")

from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference  # noqa: E402
from breath.ops.bk_resolvent_triton import (  # noqa: E402
    CHUNK_MAX,
    CHUNK_MIN,
    SCAN_MIN_T,
    SEQUENTIAL_MIN_CHAINS,
    bk_causal_triton,
    scan_chunk,
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
C64, C128 = torch.complex64, torch.complex128


def _inputs(B, C, T, seed=0, model_like=False, left=False):
    g = torch.Generator().manual_seed(seed)
    if model_like:  # a = V - iΓ, b = c = h real (per channel), Im z > 0
        V = torch.randn(B, C, T, generator=g, dtype=torch.float64)
        Gam = 0.01 + 0.05 * torch.rand(B, C, T, generator=g, dtype=torch.float64)
        a = torch.complex(V, -Gam)
        b = c = (0.5 + torch.rand(C, 1, generator=g, dtype=torch.float64))
        z = torch.complex(torch.randn(C, generator=g, dtype=torch.float64), torch.full((C,), 0.1, dtype=torch.float64))
    else:  # non-Hermitian complex chain
        a = torch.randn(B, C, T, generator=g, dtype=C128)
        b = 0.7 * torch.randn(B, C, T - 1, generator=g, dtype=C128)
        c = 0.7 * torch.randn(B, C, T - 1, generator=g, dtype=C128)
        z = torch.randn(C, generator=g, dtype=C128) + 1.5j
    sigma = 0.3 * torch.randn(B, C, generator=g, dtype=C128) if left else None
    return [x if x is None else x.to(DEV) for x in (a, b, c, z, sigma)]


def _f32(x):
    if x is None:
        return None
    return x.to(C64) if x.is_complex() else x.float()


def _close(x, ref, rtol=1e-5):
    """float32 kernel result vs complex128 reference, relative to the reference's scale."""
    scale = ref.abs().max().item() if ref.numel() else 1.0
    torch.testing.assert_close(x.to(ref.dtype), ref, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("T", [1, 2, 5, 16, 17, 40])
@pytest.mark.parametrize("left", [False, True])
def test_forward_matches_reference(T, left):
    a, b, c, z, s = _inputs(2, 3, T, seed=T, left=left)
    out = bk_resolvent(_f32(a), _f32(b), _f32(c), _f32(z), left=_f32(s), use_triton=True)
    assert out.dtype == C64 and out.shape == a.shape
    _close(out, bk_resolvent_reference(a, b, c, z, left=s))


@pytest.mark.parametrize("T", [1, 2, 17, 40])
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("model_like", [False, True])
def test_gradients_match_reference(T, left, model_like):
    a, b, c, z, s = _inputs(2, 3, T, seed=10 + T, model_like=model_like, left=left)
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=C128).to(DEV)
    names = ["a", "b", "c", "z", "left"]

    def run(xs, **kw):
        xs = [x if x is None else x.detach().clone().requires_grad_() for x in xs]
        out = (bk_resolvent if kw else bk_resolvent_reference)(*xs[:4], left=xs[4], **kw)
        (out * w.to(out.dtype)).real.sum().backward()
        return out, xs

    out_t, xs_t = run([_f32(x) for x in (a, b, c, z, s)], use_triton=True)
    out_r, xs_r = run([a, b, c, z, s])
    _close(out_t, out_r)
    for name, xt, xr in zip(names, xs_t, xs_r):
        if xt is None:
            continue
        assert xt.grad is not None, name
        assert xt.grad.shape == xt.shape and xt.grad.dtype == xt.dtype, name
        ref = xr.grad if xr.grad is not None else torch.zeros_like(xr)  # T = 1: empty hopping
        _close(xt.grad, ref, rtol=2e-5)


@pytest.mark.parametrize("unroll,stages,block_n,num_warps,chunk",
                         [(1, 1, 32, 1, 0), (2, 1, 32, 1, 0), (4, 1, 32, 1, 0), (4, 3, 64, 2, 0), (8, 1, 32, 1, 0),
                          (8, 3, 32, 1, 0), (1, 1, 32, 1, 5), (4, 1, 32, 1, 12), (8, 3, 32, 1, 8), (8, 3, 64, 2, 16),
                          (8, 3, 32, 1, 40)])
def test_launch_configurations(unroll, stages, block_n, num_warps, chunk):
    """Every configuration the GPU benchmark may pick gives the same forward and gradients;
    N = 70 chains spans several programs with a partial last block, T = 37 a partial last block
    of time steps and, with the chunked scan (chunk > 0), a partial last chunk (chunk 40: one chunk)."""
    g = torch.Generator().manual_seed(3)
    T, N = 37, 70
    e = (torch.randn(T, N, generator=g, dtype=C128) - 1.0j).to(DEV)
    beta = (0.5 * torch.randn(T - 1, N, generator=g, dtype=C128)).to(DEV)
    sigma = (0.3 * torch.randn(N, generator=g, dtype=C128)).to(DEV)
    w = torch.randn(T, N, generator=g, dtype=C128).to(DEV)

    xs_t = [x.to(C64).requires_grad_() for x in (e, beta, sigma)]
    out = bk_causal_triton(*xs_t, unroll=unroll, stages=stages, block_n=block_n, num_warps=num_warps, chunk=chunk)
    (out * w.to(C64)).real.sum().backward()

    # reference: the same recursion, chains along the last dim
    xs_r = [x.clone().requires_grad_() for x in (e, beta, sigma)]
    ref = bk_resolvent_reference(xs_r[0].T, xs_r[1].T, torch.ones_like(xs_r[1].T), 0.0, left=xs_r[2]).T
    (ref * w).real.sum().backward()
    _close(out, ref)
    for xt, xr in zip(xs_t, xs_r):
        _close(xt.grad, xr.grad, rtol=2e-5)


def test_scan_chunk_rule():
    """Sequential when the chains fill the GPU or T is short; else chunks of a power of two that
    every UNROLL divides, at least two of them, growing with T."""
    assert scan_chunk(SCAN_MIN_T - 1, 1) == 0
    assert scan_chunk(8192, SEQUENTIAL_MIN_CHAINS) == 0
    chunks = [scan_chunk(T, 32) for T in (SCAN_MIN_T, 8192, 32768, 2**20)]
    assert chunks == sorted(chunks) and chunks[-1] == CHUNK_MAX
    for T, chunk in zip((SCAN_MIN_T, 8192, 32768, 2**20), chunks):
        assert CHUNK_MIN <= chunk <= min(CHUNK_MAX, T // 2) and chunk & (chunk - 1) == 0 and chunk % 8 == 0
    with pytest.raises(ValueError, match="chunk"):
        bk_causal_triton(torch.ones(9, 2, dtype=C64, device=DEV), torch.ones(8, 2, dtype=C64, device=DEV),
                         unroll=4, chunk=6)


def test_chunked_scan_at_production_length():
    """The chunked scan as the dispatch picks it at T 2048 (64 chunks of 32 today; 4 chains,
    model-like, from a state σ), forward and every gradient against complex128 autograd of the
    reference."""
    T = 2048
    assert T // scan_chunk(T, 4) >= 8
    a, b, c, z, s = _inputs(2, 2, T, seed=11, model_like=True, left=True)
    s = s.real.abs() + 1j * s.imag.abs()  # Im σ ≥ 0: a continuation's self-energy
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(2), dtype=C128).to(DEV)

    def run(xs, **kw):
        xs = [x.detach().clone().requires_grad_() for x in xs]
        out = (bk_resolvent if kw else bk_resolvent_reference)(*xs[:4], left=xs[4], **kw)
        (out * w.to(out.dtype)).real.sum().backward()
        return [out] + [x.grad for x in xs]

    got = run([_f32(x) for x in (a, b, c, z, s)], use_triton=True)
    want = run([a, b, c, z, s])
    for x, ref in zip(got, want, strict=True):
        _close(x, ref, rtol=2e-5)


@pytest.mark.parametrize("split", [13, 16])
def test_chunked_scan_continuation(split):
    """Recurrent = parallel with the chunked scan (chunks of 8): the sequence in two calls, the second
    from σ = β g of the first call's last site, gives the g of one call."""
    gen = torch.Generator().manual_seed(8)
    T, N = 40, 3
    e = torch.complex(torch.randn(T, N, generator=gen), -0.05 - 0.1 * torch.rand(T, N, generator=gen)).to(DEV)
    beta = (0.5 + torch.rand(T - 1, N, generator=gen)).to(C64).to(DEV)
    whole = bk_causal_triton(e, beta, chunk=8)
    g1 = bk_causal_triton(e[:split], beta[: split - 1], chunk=8)
    g2 = bk_causal_triton(e[split:], beta[split:], beta[split - 1] * g1[-1], chunk=8)
    torch.testing.assert_close(torch.cat([g1, g2]), whole, rtol=1e-6, atol=1e-6)


def test_long_model_like_chain_is_bounded_and_accurate():
    a, b, c, z, _ = _inputs(2, 4, 300, seed=5, model_like=True)
    out = bk_resolvent(_f32(a), _f32(b), _f32(c), _f32(z), use_triton=True)
    assert (out.imag > 0).all()
    assert (out.abs() <= 1.0 / (-a.imag + z.imag[:, None]).float() * (1 + 1e-5)).all()
    _close(out, bk_resolvent_reference(a, b, c, z))


def test_chunked_continuation():
    a, b, c, z, _ = _inputs(2, 3, 30, seed=6, model_like=True)
    a, b, c, z = _f32(a), _f32(b), _f32(c), _f32(z)
    whole = bk_resolvent(a, b, c, z, use_triton=True)
    g1 = bk_resolvent(a[..., :13], b, c, z, use_triton=True)
    g2 = bk_resolvent(a[..., 13:], b, c, z, left=(b * c)[..., 0] * g1[..., -1], use_triton=True)
    torch.testing.assert_close(torch.cat([g1, g2], -1), whole, rtol=1e-6, atol=1e-6)


def test_matches_pytorch_function_in_complex64():
    a, b, c, z, s = _inputs(3, 2, 25, seed=7, left=True)
    args = [_f32(x) for x in (a, b, c, z)]
    out_t = bk_resolvent(*args, left=_f32(s), use_triton=True)
    out_p = bk_resolvent(*args, left=_f32(s), use_triton=False)
    torch.testing.assert_close(out_t, out_p, rtol=1e-5, atol=1e-5 * out_p.abs().max().item())


@pytest.mark.parametrize("hermitian", [False, True])
@pytest.mark.parametrize("T", [1, 9])
@pytest.mark.parametrize("with_state", [False, True])
def test_bkcore_real_path_matches_complex_path(hermitian, T, with_state):
    """BKCore with the kernel (real (re, im) inputs, no complex tensor) against the PyTorch complex
    path: same features, last g and gradients of the input, the state and every parameter."""
    from breath.layers.bk import BKCore

    torch.manual_seed(0)
    layers = [BKCore(16, 3, 0.05, hermitian=hermitian, use_triton=use).to(DEV) for use in (True, False)]
    layers[1].load_state_dict(layers[0].state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, 16, generator=g).to(DEV)
    g_prev = torch.randn(2, 3, 2, generator=g).abs().to(DEV) if with_state else None  # Im g > 0
    w = torch.randn(2, T, 16, generator=g).to(DEV)

    def run(layer):
        xs = [x.clone().requires_grad_(), None if g_prev is None else g_prev.clone().requires_grad_()]
        features, _, g_last = layer(*xs)
        ((features * w).sum() + g_last.square().sum()).backward()
        return [features, g_last] + [v.grad for v in xs if v is not None] + [p.grad for p in layer.parameters()]

    got, want = run(layers[0]), run(layers[1])
    for a, b in zip(got, want, strict=True):
        _close(a, b)


@pytest.mark.parametrize("pieces", [[3, 13, 1, 7, 16], [1] * 8])
def test_phase2_recurrent_equals_parallel_with_kernels(pieces, logits_in_pieces, tiny_model):
    """The model's ground rule with every kernel (BK, short convolution, memory) chosen: feeding the
    sequence in pieces with the state gives the logits of one pass, to float32 rounding."""
    model = tiny_model(head_dim=16, memory_chunk=16, use_triton="on").to(DEV)
    ids = torch.randint(0, 97, (2, sum(pieces)), generator=torch.Generator().manual_seed(1)).to(DEV)
    with torch.no_grad():
        full = model(ids).logits
        stepped, _ = logits_in_pieces(model, ids, pieces)
    assert ((stepped - full).norm() / full.norm()).item() < 1e-5


@pytest.mark.parametrize("prefill_kernels", [True, False])
def test_a_state_continues_on_the_other_path(prefill_kernels, tiny_model):
    """The kernels and the PyTorch path share one state format: a prompt prefilled on one path and
    continued token by token on the other gives the logits of one pass."""
    first, second = (tiny_model(head_dim=16, memory_chunk=16, use_triton="on" if kernels else "off").to(DEV)
                     for kernels in (prefill_kernels, not prefill_kernels))  # the same weights (seed 0)
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1)).to(DEV)
    with torch.no_grad():
        full = second(ids).logits
        out = first(ids[:, :19])
        logits = [out.logits]
        for t in range(19, 24):
            out = second(ids[:, t : t + 1], state=out.state)
            logits.append(out.logits)
    stepped = torch.cat(logits, dim=1)
    assert ((stepped - full).norm() / full.norm()).item() < 1e-5
