r"""Birman–Schwinger (BK) resolvent of a tridiagonal chain, in O(T) time and memory.

For a tridiagonal matrix ``H`` with diagonal ``a`` (length T), super-diagonal ``b`` and
sub-diagonal ``c`` (length T-1) and a complex spectral shift ``z``, this module computes

* ``causal=True``: ``g_t = [(H_{1..t} - z)^{-1}]_{tt}``, the Green's function of the chain truncated
  at site t (the leading t×t block), by the left continued fraction::

      g_1 = 1 / (a_1 - z - σ)
      g_t = 1 / (a_t - z - β_{t-1} g_{t-1}),        β_t = b_t c_t

  where ``σ`` (argument ``left``, default 0) is the self-energy of an earlier part of the chain.
  Continuing a sequence across calls is exact: the causal g of sites [t0, T) with
  ``left = β_{t0-1} g_{t0-1}`` equals the tail of the causal g of sites [0, T) (recurrent = parallel).

* ``causal=False``: the diagonal of the full ``(H - z)^{-1}``, from the left fraction ``g`` above and
  the right fraction ``r_T = 1/(a_T - z)``, ``r_t = 1/(a_t - z - β_t r_{t+1})``::

      G_tt = 1 / (a_t - z - β_{t-1} g_{t-1} - β_t r_{t+1})

  (``σ`` replaces ``β_0 g_0`` at the first site here too.)

Only the products ``β = b·c`` enter, so a non-symmetric hopping with the same products gives the
same result.

**Boundedness (why the model needs no clamps).** If every ``β_t`` is real and ``≥ 0``, ``Im σ ≥ 0``
and ``Im(a_t - z) ≤ -κ_t < 0`` for every t, then every ``g_t`` lies in the open upper half plane
and ``|g_t| ≤ 1/κ_t``. Proof by induction: ``Im(β_{t-1} g_{t-1}) ≥ 0`` (or ``Im σ ≥ 0`` at t=1),
so the denominator ``d_t = a_t - z - β_{t-1} g_{t-1}`` has ``Im d_t ≤ -κ_t``; then
``Im g_t = -Im d_t / |d_t|² > 0`` and ``|g_t| = 1/|d_t| ≤ 1/|Im d_t| ≤ 1/κ_t``. The same holds for
``r_t`` and for the full diagonal ``G_tt``. In the model ``a_t = V_t - iΓ_t``, ``b = c = h`` real
and ``Im z > 0``, so ``κ_t = Γ_t + Im z`` and the continuation ``σ = h² g_prev`` is in the upper
half plane: the recursion is unconditionally bounded.

Implementation: :func:`bk_resolvent` runs a custom :class:`torch.autograd.Function` whose forward is
the sequential recursion (vectorised over all chains, a Python loop over T only, no autograd graph)
and whose backward is the hand-derived adjoint recursion (a reverse loop over T). Saved for backward:
``g`` (and ``r``, ``G`` for the full resolvent) and ``β``: O(T) memory per chain.
:func:`bk_resolvent_reference` is the same recursion in ordinary differentiable torch ops, the
ground truth that the custom backward is tested against.

Adjoint (PyTorch's convention for holomorphic maps, ``grad_in = conj(∂out/∂in) · grad_out``), with
``e_t = a_t - z`` and ``Ḡ`` the incoming gradient:

* causal: ``u_t = conj(g_t)² (Ḡ_t + conj(β_t) u_{t+1})`` (``u_{T+1} = 0``), then
  ``ē_t = -u_t``, ``β̄_t = conj(g_t) u_{t+1}``, ``σ̄ = u_1``, ``z̄ = -Σ_t ē_t``.
* full: ``w_t = conj(G_t)² Ḡ_t``; ``p_t = w_t + conj(g_t)² conj(β_t) p_{t+1}`` (reverse, ``p_T = w_T``);
  ``m_t = w_t + conj(r_t)² conj(β_{t-1}) m_{t-1}`` (forward, ``m_1 = w_1``); then
  ``ē_t = w_t - p_t - m_t``, ``β̄_t = conj(g_t) p_{t+1} + conj(r_{t+1}) m_t``, ``σ̄ = p_1``.

Promotion to the complex compute dtype, broadcasting and the product ``b·c`` are ordinary torch ops
around the Function, so autograd reduces broadcast dimensions and gives real ``b``/``c`` real
gradients (the real part) by itself.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from breath.ops.backend import kernels_fit, note_fallback, require_kernels, triton_mode

__all__ = ["bk_resolvent", "bk_resolvent_reference", "uses_triton"]


# ----------------------------------------------------------------------------------------------
# Input handling shared by the reference and the custom Function
# ----------------------------------------------------------------------------------------------


def _compute_dtype(*xs) -> torch.dtype:
    """complex128 if any tensor input is double precision, else complex64 (half is upcast)."""
    for x in xs:
        if isinstance(x, Tensor) and x.dtype in (torch.float64, torch.complex128):
            return torch.complex128
    return torch.complex64


def _as_tensor(x, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype)
    if isinstance(x, numbers.Number):
        return torch.tensor(x, dtype=dtype, device=device)
    raise TypeError(f"bk_resolvent: expected a tensor or a number, got {type(x).__name__}")


def _prepare(a, b, c, z, left):
    """Promote, validate and broadcast the inputs.

    Returns ``e = a - z`` of shape (*batch, T), ``beta = b·c`` of shape (*batch, T-1), ``sigma`` of
    shape (*batch) or None, and ``batch``. All complex of one dtype, built with differentiable ops.
    """
    if not isinstance(a, Tensor):
        raise TypeError("bk_resolvent: `a` must be a tensor of shape (..., T)")
    if a.dim() < 1 or a.shape[-1] < 1:
        raise ValueError(f"bk_resolvent: `a` must have shape (..., T) with T >= 1, got {tuple(a.shape)}")
    T = a.shape[-1]
    dtype = _compute_dtype(a, b, c, z, left)
    dev = a.device
    a = a.to(dtype)
    b = _as_tensor(b, dtype, dev)
    c = _as_tensor(c, dtype, dev)
    z = _as_tensor(z, dtype, dev)
    sigma = None if left is None else _as_tensor(left, dtype, dev)

    for name, x in (("b", b), ("c", c)):
        if x.dim() >= 1 and x.shape[-1] not in (T - 1, 1):
            raise ValueError(
                f"bk_resolvent: `{name}` must have shape (..., T-1) = (..., {T - 1}) "
                f"(or a last dimension of 1), got {tuple(x.shape)}"
            )
    lead = lambda x: tuple(x.shape[:-1]) if x.dim() >= 1 else ()  # noqa: E731
    shapes = [a.shape[:-1], lead(b), lead(c), z.shape] + ([] if sigma is None else [sigma.shape])
    try:
        batch = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError as err:
        raise ValueError(
            "bk_resolvent: leading dimensions do not broadcast: "
            f"a {tuple(a.shape)}, b {tuple(b.shape)}, c {tuple(c.shape)}, z {tuple(z.shape)}"
            + ("" if sigma is None else f", left {tuple(sigma.shape)}")
        ) from err

    e = (a - z.unsqueeze(-1)).expand(*batch, T)
    beta = (b * c).expand(*batch, T - 1)
    if sigma is not None:
        sigma = sigma.expand(batch)
    return e, beta, sigma, batch


# ----------------------------------------------------------------------------------------------
# Reference: the plain recursion in differentiable torch ops
# ----------------------------------------------------------------------------------------------


def bk_resolvent_reference(a, b, c, z, causal: bool = True, left: Tensor | None = None) -> Tensor:
    """Plain-PyTorch BK resolvent (ground truth): same arguments and result as :func:`bk_resolvent`,
    written as an ordinary differentiable loop, so autograd gives its exact gradient. O(T) time but
    a large autograd graph; use it for tests, not for training."""
    e, beta, sigma, _ = _prepare(a, b, c, z, left)
    T = e.shape[-1]
    gs = []
    s = sigma
    for t in range(T):
        d = e[..., t] if s is None else e[..., t] - s
        g_t = 1.0 / d
        gs.append(g_t)
        if t < T - 1:
            s = beta[..., t] * g_t
    g = torch.stack(gs, dim=-1)
    if causal:
        return g

    rs = [None] * T
    q = None
    for t in range(T - 1, -1, -1):
        d = e[..., t] if q is None else e[..., t] - q
        rs[t] = 1.0 / d
        if t > 0:
            q = beta[..., t - 1] * rs[t]
    r = torch.stack(rs, dim=-1)
    first = torch.zeros_like(e[..., :1]) if sigma is None else sigma.unsqueeze(-1)
    s_all = torch.cat([first, beta * g[..., :-1]], dim=-1)
    q_all = torch.cat([beta * r[..., 1:], torch.zeros_like(e[..., :1])], dim=-1)
    return 1.0 / (e - s_all - q_all)


# ----------------------------------------------------------------------------------------------
# Custom autograd Functions: sequential forward, hand-derived adjoint backward.
# Layout inside: time-major (T, N), N = number of chains, so every step touches contiguous rows.
# ----------------------------------------------------------------------------------------------


def _left_fraction(e: Tensor, beta: Tensor, sigma: Tensor | None) -> Tensor:
    """g_0 = 1/(e_0 - σ), g_t = 1/(e_t - β_{t-1} g_{t-1}); e (T, N), beta (T-1, N), sigma (N,)."""
    T = e.shape[0]
    g = torch.empty_like(e)
    torch.reciprocal(e[0] if sigma is None else e[0] - sigma, out=g[0])
    for t in range(1, T):
        torch.reciprocal(torch.addcmul(e[t], beta[t - 1], g[t - 1], value=-1), out=g[t])
    return g


def _right_fraction(e: Tensor, beta: Tensor) -> Tensor:
    """r_{T-1} = 1/e_{T-1}, r_t = 1/(e_t - β_t r_{t+1})."""
    T = e.shape[0]
    r = torch.empty_like(e)
    torch.reciprocal(e[T - 1], out=r[T - 1])
    for t in range(T - 2, -1, -1):
        torch.reciprocal(torch.addcmul(e[t], beta[t], r[t + 1], value=-1), out=r[t])
    return r


def _linear_scan_(x: Tensor, coef: Tensor, reverse: bool) -> Tensor:
    """In place: x_t += coef_t * x_{t+1} (reverse, coef (T-1, N) indexed by t) or
    x_t += coef_{t-1} * x_{t-1} (forward)."""
    T = x.shape[0]
    if reverse:
        for t in range(T - 2, -1, -1):
            x[t].addcmul_(coef[t], x[t + 1])
    else:
        for t in range(1, T):
            x[t].addcmul_(coef[t - 1], x[t - 1])
    return x


class _BKCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e: Tensor, beta: Tensor, sigma: Tensor | None) -> Tensor:
        g = _left_fraction(e, beta, sigma)
        ctx.save_for_backward(g, beta)
        ctx.has_sigma = sigma is not None
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_g: Tensor):
        g, beta = ctx.saved_tensors
        gc = g.conj()
        coef = gc * gc  # conj(g_t)^2
        u = coef * grad_g  # w_t
        coef = coef[:-1].mul_(beta.conj())  # conj(g_t)^2 conj(β_t), t < T-1
        _linear_scan_(u, coef, reverse=True)  # u_t = w_t + coef_t u_{t+1}
        grad_beta = gc[:-1] * u[1:] if ctx.needs_input_grad[1] else None
        grad_sigma = u[0].clone() if ctx.has_sigma and ctx.needs_input_grad[2] else None
        grad_e = u.neg_() if ctx.needs_input_grad[0] else None
        return grad_e, grad_beta, grad_sigma


class _BKFull(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e: Tensor, beta: Tensor, sigma: Tensor | None) -> Tensor:
        g = _left_fraction(e, beta, sigma)
        r = _right_fraction(e, beta)
        # denominators: e_t - s_t - q_t with s_t = β_{t-1} g_{t-1} (σ at t=0), q_t = β_t r_{t+1}
        d = e.clone()
        if sigma is not None:
            d[0] -= sigma
        d[1:].addcmul_(beta, g[:-1], value=-1)
        d[:-1].addcmul_(beta, r[1:], value=-1)
        G = d.reciprocal_()
        ctx.save_for_backward(g, r, G, beta)
        ctx.has_sigma = sigma is not None
        return G

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_G: Tensor):
        g, r, G, beta = ctx.saved_tensors
        Gc = G.conj()
        w = Gc * Gc * grad_G
        bc = beta.conj()
        gc = g.conj()
        rc = r.conj()
        p = _linear_scan_(w.clone(), gc[:-1] * gc[:-1] * bc, reverse=True)
        m = _linear_scan_(w.clone(), rc[1:] * rc[1:] * bc, reverse=False)
        grad_beta = None
        if ctx.needs_input_grad[1]:
            grad_beta = gc[:-1] * p[1:] + rc[1:] * m[:-1]
        grad_sigma = p[0].clone() if ctx.has_sigma and ctx.needs_input_grad[2] else None
        grad_e = w.sub_(p).sub_(m) if ctx.needs_input_grad[0] else None
        return grad_e, grad_beta, grad_sigma


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def _check_triton_ok(dtype: torch.dtype, x: Tensor, causal: bool) -> None:
    if not causal:
        raise NotImplementedError("bk_resolvent: the Triton kernel is causal only; use use_triton='off' "
                                  "(or 'auto') with causal=False")
    if dtype != torch.complex64:
        raise TypeError("bk_resolvent: the Triton kernel computes in float32; give complex64/float32 inputs "
                        f"(the compute dtype here is {dtype}) or use use_triton='off'")
    require_kernels(x, "bk_resolvent")


def uses_triton(use_triton: str | bool | None, causal: bool, dtype: torch.dtype, x: Tensor) -> bool:
    """Whether :func:`bk_resolvent` runs the Triton kernel for its argument ``use_triton``, a resolvent
    that is ``causal`` or not, the complex compute dtype ``dtype`` and inputs on ``x``'s device (see
    its docstring); raises when ``use_triton="on"`` asks for a kernel that cannot run. Callers that
    build the kernel's inputs themselves (``BKCore``'s real-valued path) decide by this same rule."""
    mode = triton_mode(use_triton)
    if mode == "auto":
        if not causal or not kernels_fit(x):  # the full resolvent has no kernel: not a fallback
            return False
        if dtype != torch.complex64:
            note_fallback(f"the BK kernels compute in complex64; a {dtype} resolvent runs in PyTorch")
        return dtype == torch.complex64
    if mode == "on":
        _check_triton_ok(dtype, x, causal)
    return mode == "on"


def bk_resolvent(
    a: Tensor,
    b,
    c,
    z,
    causal: bool = True,
    left: Tensor | None = None,
    use_triton: str | bool | None = "auto",
) -> Tensor:
    r"""Diagonal resolvent of the tridiagonal chain (a, b, c) at spectral shift z, O(T).

    Args:
        a: complex diagonal, shape (..., T), T >= 1.
        b, c: super- and sub-diagonal, shape (..., T-1) (a last dimension of 1 broadcasts), real or
            complex; only the product ``β = b·c`` is used.
        z: complex shift (tensor or number), broadcastable to the leading dims (...).
        causal: True: ``g_t = [(H_{1..t} - z)^{-1}]_{tt}`` (each output depends on sites <= t only).
            False: the diagonal of the full ``(H - z)^{-1}``.
        left: optional self-energy ``σ`` of an earlier part of the chain, broadcastable to (...):
            the first site's denominator becomes ``a_1 - z - σ``. Pass ``β_{t0-1} g_{t0-1}`` from a
            previous call to continue a sequence. Gradients flow into it. Also accepted with
            ``causal=False`` (it enters the left continued fraction).
        use_triton: "auto": the Triton kernel when ``backend.kernels_fit`` (CUDA, Ampere or newer,
            ``triton`` imports), the resolvent is causal and the compute dtype is complex64; else the PyTorch Function.
            "on" forces Triton (causal, complex64 only; on CPU tensors only under
            ``TRITON_INTERPRET=1``), "off" forces PyTorch (``backend.triton_mode``). The Triton kernels live in
            :mod:`breath.ops.bk_resolvent_triton`.

    All leading dimensions of a, b, c, z and left broadcast together. Inputs in double precision
    compute in complex128, everything else (half, bfloat16, float32, complex32, complex64) in
    complex64. Returns a complex tensor of shape (*batch, T).

    Bound: with ``β ≥ 0`` real, ``Im σ ≥ 0`` and ``Im(a_t - z) ≤ -κ_t < 0``, every output lies in
    the upper half plane with ``|g_t| ≤ 1/κ_t`` (see the module docstring); for the model's
    ``a = V - iΓ``, ``b = c = h``, ``Im z > 0``: ``|g_t| ≤ 1/(Γ_t + Im z)``.
    """
    e, beta, sigma, batch = _prepare(a, b, c, z, left)
    T = e.shape[-1]
    N = math.prod(batch)

    use_triton = uses_triton(use_triton, causal, e.dtype, e)

    # time-major (T, N) contiguous layout for the sequential loops
    e_tn = e.movedim(-1, 0).reshape(T, N).contiguous()
    beta_tn = beta.movedim(-1, 0).reshape(T - 1, N).contiguous()
    sigma_n = None if sigma is None else sigma.reshape(N).contiguous()
    if use_triton:
        from breath.ops.bk_resolvent_triton import bk_causal_triton

        out = bk_causal_triton(e_tn, beta_tn, sigma_n)
    else:
        out = (_BKCausal if causal else _BKFull).apply(e_tn, beta_tn, sigma_n)
    return out.reshape(T, *batch).movedim(0, -1)
