"""Tests of the BK resolvent op (PyTorch path): values against dense inverses, the dissipative bound,
chunked continuation, and exact gradients (gradcheck and autograd of the reference)."""

import warnings

import pytest
import torch

from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference

C128 = torch.complex128


def _rand(*shape, dtype=C128, gen=None):
    return torch.randn(tuple(shape), dtype=dtype, generator=gen)


def _chain(batch, T, seed=0):
    """Random non-Hermitian complex chain, kept away from singular leading blocks by a shift z with
    a sizeable imaginary part (a random complex matrix is rarely, but possibly, near-singular)."""
    g = torch.Generator().manual_seed(seed)
    a = _rand(*batch, T, gen=g)
    b = 0.7 * _rand(*batch, T - 1, gen=g)
    c = 0.7 * _rand(*batch, T - 1, gen=g)
    z = _rand(*batch, gen=g) + 1.5j
    return a, b, c, z


def _dense(a, b, c, left=None):
    """The tridiagonal H; left shifts H_11 by -σ."""
    H = torch.diag_embed(a) + torch.diag_embed(b, 1) + torch.diag_embed(c, -1)
    if left is not None:
        H[..., 0, 0] = H[..., 0, 0] - left
    return H


def _causal_dense(a, b, c, z, left=None):
    """[(H_{1..t} - z)^{-1}]_{tt} for every t, by dense inversion."""
    H = _dense(a, b, c, left)
    T = a.shape[-1]
    out = []
    for t in range(1, T + 1):
        M = H[..., :t, :t] - z[..., None, None] * torch.eye(t, dtype=H.dtype)
        out.append(torch.linalg.inv(M)[..., t - 1, t - 1])
    return torch.stack(out, -1)


def _full_dense(a, b, c, z, left=None):
    H = _dense(a, b, c, left)
    T = a.shape[-1]
    M = H - z[..., None, None] * torch.eye(T, dtype=H.dtype)
    return torch.linalg.inv(M).diagonal(dim1=-2, dim2=-1)


def _assert_close(x, y, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


BATCHES = [(), (3,), (2, 3)]
TS = [1, 2, 7, 33]


# ----------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_causal_matches_dense_inverse(batch, T, impl):
    a, b, c, z = _chain(batch, T, seed=T)
    fn = bk_resolvent if impl == "custom" else bk_resolvent_reference
    _assert_close(fn(a, b, c, z, causal=True), _causal_dense(a, b, c, z))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_causal_with_left_matches_dense_inverse(batch, T, impl):
    a, b, c, z = _chain(batch, T, seed=100 + T)
    left = 0.5 * _rand(*batch, gen=torch.Generator().manual_seed(7))
    fn = bk_resolvent if impl == "custom" else bk_resolvent_reference
    _assert_close(fn(a, b, c, z, causal=True, left=left), _causal_dense(a, b, c, z, left))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("with_left", [False, True])
def test_full_matches_dense_inverse(batch, T, impl, with_left):
    a, b, c, z = _chain(batch, T, seed=200 + T)
    left = 0.5 * _rand(*batch, gen=torch.Generator().manual_seed(8)) if with_left else None
    fn = bk_resolvent if impl == "custom" else bk_resolvent_reference
    _assert_close(fn(a, b, c, z, causal=False, left=left), _full_dense(a, b, c, z, left))


def test_last_diagonal_of_full_equals_causal_end():
    a, b, c, z = _chain((4,), 9, seed=3)
    g = bk_resolvent(a, b, c, z, causal=True)
    G = bk_resolvent(a, b, c, z, causal=False)
    _assert_close(G[..., -1], g[..., -1])


def test_only_the_product_bc_matters():
    a, b, c, z = _chain((2,), 10, seed=4)
    s = _rand(2, 9, gen=torch.Generator().manual_seed(5))
    for causal in (True, False):
        _assert_close(bk_resolvent(a, b, c, z, causal=causal), bk_resolvent(a, b * s, c / s, z, causal=causal))


def test_broadcasting_of_b_c_z_left():
    """b, c with a last dimension of 1 and fewer leading dims; z per channel; left scalar."""
    g = torch.Generator().manual_seed(11)
    B, Ch, T = 2, 3, 6
    a = _rand(B, Ch, T, gen=g)
    h = torch.rand(Ch, 1, dtype=torch.float64, generator=g) + 0.2
    z = _rand(Ch, gen=g) + 1.0j
    left = torch.tensor(0.1 + 0.2j, dtype=C128)
    out = bk_resolvent(a, h, h, z, left=left)
    bb = h.expand(Ch, T - 1).expand(B, Ch, T - 1)
    ref = _causal_dense(a, bb.to(C128), bb.to(C128), z.expand(B, Ch), left.expand(B, Ch))
    assert out.shape == (B, Ch, T)
    _assert_close(out, ref)
    # python scalars for z and hopping
    out2 = bk_resolvent(a, 0.5, 0.5, 0.3 + 1.0j)
    ref2 = _causal_dense(a, torch.full((B, Ch, T - 1), 0.5, dtype=C128), torch.full((B, Ch, T - 1), 0.5, dtype=C128),
                         torch.full((B, Ch), 0.3 + 1.0j, dtype=C128))
    _assert_close(out2, ref2)


def test_noncontiguous_input():
    """a given as a (B, C, T) view of a (B, T, C) tensor, as the model produces it."""
    a_btc = _rand(2, 12, 3, gen=torch.Generator().manual_seed(6))
    a = a_btc.permute(0, 2, 1)  # (B, C, T), non-contiguous
    h = torch.tensor(0.8, dtype=torch.float64)
    z = torch.tensor([0.1 + 0.5j, 0.2 + 0.7j, -0.3 + 1.1j], dtype=C128)
    _assert_close(bk_resolvent(a, h, h, z), bk_resolvent(a.contiguous(), h, h, z))
    _assert_close(bk_resolvent(a, h, h, z), bk_resolvent_reference(a, h, h, z))


@pytest.mark.parametrize("causal", [True, False])
def test_dtypes(causal):
    a, b, c, z = _chain((2,), 8, seed=9)
    out128 = bk_resolvent(a, b.real, c.real, z, causal=causal)
    assert out128.dtype == torch.complex128
    a64 = a.to(torch.complex64)
    out64 = bk_resolvent(a64, b.real.float(), c.real.float(), z.to(torch.complex64), causal=causal)
    assert out64.dtype == torch.complex64
    torch.testing.assert_close(out64.to(C128), out128, rtol=1e-5, atol=1e-6)
    # half-precision inputs are upcast to complex64
    outh = bk_resolvent(a64, b.real.half(), c.real.half(), z.to(torch.complex64), causal=causal)
    assert outh.dtype == torch.complex64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "ComplexHalf support is experimental"
        outc32 = bk_resolvent(a.to(torch.complex32), 0.5, 0.5, 1j, causal=causal)
    assert outc32.dtype == torch.complex64
    # a double-precision hopping promotes the whole computation
    assert bk_resolvent(a64, b.real, c.real, 1j, causal=causal).dtype == torch.complex128


def test_bad_shapes_raise():
    a, b, c, z = _chain((2,), 5)
    with pytest.raises(ValueError, match="T-1"):
        bk_resolvent(a, b[..., :3], c, z)
    with pytest.raises(ValueError, match="broadcast"):
        bk_resolvent(a, b, c, _rand(3))
    with pytest.raises(ValueError, match="T >= 1"):
        bk_resolvent(a[..., :0], b, c, z)


def test_use_triton_default_on_cpu_is_pytorch():
    a, b, c, z = _chain((2,), 5)
    _assert_close(bk_resolvent(a, b, c, z, use_triton=None), bk_resolvent(a, b, c, z, use_triton=False))


def test_use_triton_true_rejects_what_the_kernel_cannot_do():
    a, b, c, z = _chain((2,), 5)
    with pytest.raises(NotImplementedError, match="causal only"):
        bk_resolvent(a.to(torch.complex64), b, c, z, causal=False, use_triton=True)
    with pytest.raises(TypeError, match="float32"):
        bk_resolvent(a, b, c, z, use_triton=True)  # complex128


# ----------------------------------------------------------------------------------------------
# dissipative bound, causality, continuation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("causal", [True, False])
def test_dissipative_bound(dtype, causal):
    """a = V - iΓ, b = c = h real, Im z > 0  =>  Im g_t > 0 and |g_t| <= 1/(Γ_t + Im z)."""
    g = torch.Generator().manual_seed(12)
    Bt, Ch, T = 3, 4, 2000
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    V = 3.0 * torch.randn(Bt, Ch, T, dtype=rdt, generator=g)
    Gam = 1e-3 + 0.05 * torch.rand(Bt, Ch, T, dtype=rdt, generator=g)
    a = torch.complex(V, -Gam)
    h = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=rdt)[:, None]  # (C, 1), broadcast over T-1
    z = torch.complex(torch.randn(Ch, dtype=rdt, generator=g), torch.tensor([1e-3, 1e-2, 0.1, 1.0], dtype=rdt))
    # left = h² g_prev from the upper half plane, as the model passes it
    left = (h[:, 0] ** 2) * torch.complex(torch.randn(Bt, Ch, dtype=rdt, generator=g), torch.rand(Bt, Ch, dtype=rdt, generator=g))
    for lft in (None, left):
        out = bk_resolvent(a, h, h, z, causal=causal, left=lft)
        assert torch.isfinite(out).all()
        assert (out.imag > 0).all()
        bound = 1.0 / (Gam + z.imag[:, None])
        assert (out.abs() <= bound * (1 + 1e-5)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causality_bit_identical(dtype):
    """Perturbing site j leaves every causal output before j bit-identical (design rule 1)."""
    a, b, c, z = _chain((2, 3), 20, seed=13)
    cd = torch.complex64 if dtype == torch.float32 else C128
    a, b, c, z = a.to(cd), b.to(cd), c.to(cd), z.to(cd)
    base = bk_resolvent(a, b, c, z)
    for j in (0, 5, 19):
        a2 = a.clone()
        a2[..., j] += 0.37 - 0.2j
        b2 = b.clone()
        if j < 19:
            b2[..., j] += 0.5  # the bond j -> j+1 enters only from site j+1 on
        out = bk_resolvent(a2, b2, c, z)
        assert torch.equal(out[..., :j], base[..., :j])
        assert not torch.equal(out[..., j], base[..., j])


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_chunked_continuation(impl):
    """g on [0, T) equals g on [0, t0) then on [t0, T) with left = β_{t0-1} g_{t0-1}."""
    fn = bk_resolvent if impl == "custom" else bk_resolvent_reference
    a, b, c, z = _chain((2, 3), 40, seed=14)
    beta = b * c
    whole = fn(a, b, c, z)
    for cuts in ([1], [17], [39], [5, 6, 20, 33]):
        pieces, left, start = [], None, 0
        for stop in cuts + [40]:
            g = fn(a[..., start:stop], b[..., start:stop - 1], c[..., start:stop - 1], z, left=left)
            pieces.append(g)
            if stop < 40:
                left = beta[..., stop - 1] * g[..., -1]
            start = stop
        _assert_close(torch.cat(pieces, -1), whole, rtol=1e-12, atol=1e-14)


def test_chunked_continuation_gradients():
    """Gradients through a two-chunk continuation equal gradients of the one-shot call."""
    a, b, c, z = _chain((3,), 16, seed=15)
    w = _rand(3, 16, gen=torch.Generator().manual_seed(1))

    def run(chunked):
        xs = [x.clone().requires_grad_() for x in (a, b, c, z)]
        A, Bb, Cc, Z = xs
        if chunked:
            g1 = bk_resolvent(A[..., :9], Bb[..., :8], Cc[..., :8], Z)
            g2 = bk_resolvent(A[..., 9:], Bb[..., 9:], Cc[..., 9:], Z, left=Bb[..., 8] * Cc[..., 8] * g1[..., -1])
            g = torch.cat([g1, g2], -1)
        else:
            g = bk_resolvent(A, Bb, Cc, Z)
        (g * w).real.sum().backward()
        return [x.grad for x in xs]

    for x, y in zip(run(True), run(False)):
        _assert_close(x, y)


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [1, 2, 6])
def test_gradcheck(causal, T):
    """Custom Function vs finite differences, complex128, with left and a broadcast z."""
    g = torch.Generator().manual_seed(20 + T)
    B, Ch = 2, 2
    a = _rand(B, Ch, T, gen=g).requires_grad_()
    b = (0.7 * _rand(B, Ch, T - 1, gen=g)).requires_grad_()
    c = (0.7 * _rand(B, Ch, T - 1, gen=g)).requires_grad_()
    z = (_rand(Ch, gen=g) + 1.5j).requires_grad_()  # broadcast over B
    left = (0.3 * _rand(B, Ch, gen=g)).requires_grad_()
    f = lambda a, b, c, z, left: bk_resolvent(a, b, c, z, causal=causal, left=left)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, b, c, z, left))


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_real_hopping_scalar_left(causal):
    g = torch.Generator().manual_seed(30)
    a = _rand(3, 5, gen=g).requires_grad_()
    h = (torch.rand(3, 1, dtype=torch.float64, generator=g) + 0.3).requires_grad_()
    z = torch.tensor(0.2 + 1.0j, dtype=C128, requires_grad=True)
    left = torch.tensor(0.1 + 0.3j, dtype=C128, requires_grad=True)
    f = lambda a, h, z, left: bk_resolvent(a, h, h, z, causal=causal, left=left)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, h, z, left))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_left", [False, True])
@pytest.mark.parametrize("T", [1, 2, 33])
def test_gradients_match_reference_autograd(causal, with_left, T):
    g = torch.Generator().manual_seed(40 + T)
    B, Ch = 3, 4
    inputs = [
        _rand(B, Ch, T, gen=g),
        0.7 * _rand(Ch, T - 1, gen=g),  # broadcast over B
        0.7 * _rand(B, Ch, T - 1, gen=g),
        _rand(Ch, gen=g) + 1.5j,
    ]
    if with_left:
        inputs.append(0.3 * _rand(B, 1, gen=g))  # broadcast over channels
    w = _rand(B, Ch, T, gen=g)

    def grads(fn):
        xs = [x.clone().requires_grad_() for x in inputs]
        left = xs[4] if with_left else None
        out = fn(*xs[:4], causal=causal, left=left)
        (out * w).real.sum().backward()
        return out, [x.grad for x in xs]

    out_c, g_c = grads(bk_resolvent)
    out_r, g_r = grads(bk_resolvent_reference)
    _assert_close(out_c, out_r)
    for x, gc, gr in zip(inputs, g_c, g_r):
        assert gc.shape == x.shape
        if gr is None:  # T = 1: the reference never touches the empty hopping
            gr = torch.zeros_like(x)
        _assert_close(gc, gr, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_real_hopping_gets_real_gradients(causal):
    g = torch.Generator().manual_seed(50)
    a = _rand(2, 3, 7, gen=g).requires_grad_()
    b = (torch.rand(3, 6, dtype=torch.float64, generator=g) + 0.1).requires_grad_()
    c = (torch.rand(3, 1, dtype=torch.float64, generator=g) + 0.1).requires_grad_()
    z = torch.tensor(0.5j, dtype=C128, requires_grad=True)
    out = bk_resolvent(a, b, c, z, causal=causal)
    w = _rand(2, 3, 7, gen=g)
    (out * w).real.sum().backward()
    assert b.grad.dtype == torch.float64 and b.grad.shape == b.shape
    assert c.grad.dtype == torch.float64 and c.grad.shape == c.shape
    assert a.grad.dtype == C128 and z.grad.shape == z.shape
    # same as autograd of the reference
    xs = [x.detach().clone().requires_grad_() for x in (a, b, c, z)]
    (bk_resolvent_reference(*xs, causal=causal) * w).real.sum().backward()
    for x, y in zip((a, b, c, z), xs):
        _assert_close(x.grad, y.grad)


def test_only_requested_gradients():
    a, b, c, z = _chain((2,), 6, seed=60)
    a.requires_grad_()
    out = bk_resolvent(a, b, c, z)
    out.abs().sum().backward()
    assert a.grad is not None and b.grad is None
    with torch.no_grad():
        assert not bk_resolvent(a, b, c, z).requires_grad
