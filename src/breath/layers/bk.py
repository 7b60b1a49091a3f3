"""BK-Core: each token sets the on-site potential of a 1-D chain; the layer reads the chain's causal
Green's function (DESIGN §4).

For token t and channel c (one channel per memory head):

    V_{t,c} = (W_V x_t)_c
    Γ_{t,c} = softplus((W_Γ x_t)_c + b_c) + base_decay          (non-Hermitian forgetting rate)
    Γ_{t,c} = base_decay + m·tanh(softplus((W_Γ x_t)_c + b_c) / m),  m = max_gamma − base_decay
                                                                  (with a bound ``max_gamma``)
    a_{t,c} = V_{t,c} − iΓ_{t,c}
    g_{t,c} = 1 / (a_{t,c} − z_c − h_c² g_{t−1,c})                 (causal resolvent, g_0 = 0)

``h_c`` (hopping) is the same at every position, so the layer runs at any length, and the spectral
shift ``z_c`` has ``Im z_c ≥ ε > 0``. Since ``Im(a_t − z) = −(Γ_t + Im z) < 0`` every ``g_t`` stays
in the upper half plane with ``|g_t| ≤ 1/(Γ_t + Im z)``: the recursion is bounded by construction.
The features ``(Re g, Im g)`` are mapped back to the model width by ``W_bk``.

The bounded Γ is a smooth saturation: it equals the unbounded one to first order near base_decay
(tanh(u) = u − u³/3) and rises monotonically to ``max_gamma``, so gradients stay exact
and everything downstream (the resolvent, the memory, the kernels) sees just another Γ.

With ``hermitian=True`` (the Phase 1 baseline) there is no Γ: ``a = V`` is real and only ``Im z``
keeps the recursion bounded.

When the causal resolvent runs on the Triton kernel (float32) the layer hands the kernel real
``(re, im)`` tensors it builds itself, and the state ``g`` is kept as such a real pair in every case:
inductor cannot generate code for complex operators, and each would run as a separate eager kernel
in every compiled step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from breath.errors import FieldError
from breath.ops.backend import triton_mode
from breath.ops.bk_resolvent import bk_resolvent, uses_triton

_IM_Z_FLOOR = 1e-3  # ε in Im z ≥ ε
_IM_Z_INIT = 1.0
_HOPPING_INIT = 1.0


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class BKCore(nn.Module):
    """Potential, forgetting rate and causal resolvent features of ``channels`` BK chains."""

    def __init__(self, d_model: int, channels: int, base_decay: float, hermitian: bool = False,
                 causal: bool = True, use_triton: str = "auto", max_gamma: float | None = None):
        super().__init__()
        if not causal and triton_mode(use_triton) == "on":
            raise FieldError("use_triton", "got 'on' with the full (non-causal) resolvent, which has no Triton "
                             "kernel (it is causal only); allowed here: auto | off")
        if max_gamma and max_gamma <= base_decay:
            raise FieldError("max_gamma", f"got {max_gamma!r}; allowed: None or 0 (unbounded), or a number "
                             f"> base_decay ({base_decay!r})")
        self.base_decay, self.causal = base_decay, causal
        self.max_gamma = max_gamma or None
        self.use_triton = use_triton if causal else "off"
        self.potential = nn.Linear(d_model, channels)  # W_V
        # W_Γ and b_c: at init softplus(b_c) = base_decay, so Γ ≈ 2·base_decay (DESIGN §4); the
        # small weight keeps the token-dependent part a ~10% modulation around it.
        self.forgetting = None if hermitian else nn.Linear(d_model, channels)
        self.hopping = nn.Parameter(torch.full((channels,), _HOPPING_INIT))  # h_c
        self.shift_re = nn.Parameter(torch.zeros(channels))  # Re z_c
        self.shift_im = nn.Parameter(torch.full((channels,), _softplus_inverse(_IM_Z_INIT - _IM_Z_FLOOR)))
        self.readout = nn.Linear(2 * channels, d_model)  # W_bk

    @torch.no_grad()
    def reset_forgetting(self) -> None:
        """Re-apply the Γ initialisation (the model's generic init overwrites every Linear)."""
        if self.forgetting is not None:
            nn.init.normal_(self.forgetting.weight, std=0.1 / math.sqrt(self.forgetting.in_features))
            nn.init.constant_(self.forgetting.bias, _softplus_inverse(self.base_decay))

    def forgetting_rate(self, u: torch.Tensor) -> torch.Tensor:
        """Γ from the pre-activation ``u = W_Γ x + b`` (module docstring: unbounded or saturating)."""
        excess = F.softplus(u)
        if self.max_gamma is not None:
            span = self.max_gamma - self.base_decay
            excess = span * torch.tanh(excess / span)
        return excess + self.base_decay

    def compute_dtype(self) -> torch.dtype:
        """The parameters' precision, at least float32 (there is no complex bfloat16)."""
        return torch.promote_types(self.hopping.dtype, torch.float32)

    def spectral_shift_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Re z_c, Im z_c)`` with ``Im z_c = ε + softplus(·)``, (C,) each, in :meth:`compute_dtype`."""
        dtype = self.compute_dtype()
        return self.shift_re.to(dtype), _IM_Z_FLOOR + F.softplus(self.shift_im.to(dtype))

    def spectral_shift(self) -> torch.Tensor:
        """``z_c`` (C,), complex of :meth:`compute_dtype`."""
        return torch.complex(*self.spectral_shift_parts())

    def forward(self, x: torch.Tensor, g_prev: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x (B, T, d) → (features (B, T, d), Γ (B, T, C) or None, last g (B, C, 2) for the next call).

        ``g_prev`` is the previous call's last Green's function as a real (B, C, 2) tensor of
        (Re g, Im g); it enters as the self-energy ``h² g_prev`` of the chain's earlier part, so a
        split sequence gives the same ``g``.
        """
        # The resolvent runs in float32 (float64 for a float64 model) whatever the autocast or
        # parameter dtype: it is a continued fraction, and bf16's 8-bit mantissa would dominate it.
        dtype = self.compute_dtype()
        if self.forgetting is None:
            potential, gamma = self.potential(x).to(dtype), None
        else:
            # W_V and W_Γ as one product: under autocast each Linear would keep its own bf16 copy of x
            # for the backward (a (B, T, d) tensor per layer); one product keeps one.
            weight = torch.cat((self.potential.weight, self.forgetting.weight))
            bias = torch.cat((self.potential.bias, self.forgetting.bias))
            potential, forgetting = F.linear(x, weight, bias).to(dtype).chunk(2, dim=-1)
            gamma = self.forgetting_rate(forgetting)
        if g_prev is not None and not self.causal:
            raise ValueError("resolvent='full' sees the whole window at once: it cannot continue a "
                             "sequence from a state (use the causal resolvent)")
        # the choice bk_resolvent itself would make for these inputs (complex64 for float32)
        triton = uses_triton(self.use_triton, self.causal,
                             torch.promote_types(dtype, torch.complex64), potential)
        resolvent = self._resolvent_real if triton else self._resolvent_complex
        features, g_last = resolvent(potential, gamma, g_prev)
        return self.readout(features.to(x.dtype)), gamma, g_last

    def _resolvent_complex(self, potential: torch.Tensor, gamma: torch.Tensor | None,
                           g_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Re g, Im g) features (B, T, 2C) and the last g (B, C, 2) from :func:`bk_resolvent`'s
        PyTorch Functions on ``a = V − iΓ`` (``a = V`` when Hermitian): any dtype, causal or full."""
        a = torch.complex(potential, torch.zeros_like(potential) if gamma is None else -gamma)
        hop = self.hopping.to(potential.dtype).view(-1, 1)  # b = c = h_c at every link (broadcast over batch, t)
        left = None if g_prev is None else hop.squeeze(-1).square() * torch.view_as_complex(g_prev)
        g = bk_resolvent(a.transpose(1, 2), hop, hop, self.spectral_shift(), causal=self.causal, left=left,
                         use_triton="off")  # (B, C, T): chains along the last dim
        features = torch.cat((g.real, g.imag), dim=1).transpose(1, 2)  # (B, T, 2C)
        # clone: a view would keep all of g (B, C, T) alive inside the state
        return features, torch.view_as_real(g[..., -1].clone())

    def _resolvent_real(self, potential: torch.Tensor, gamma: torch.Tensor | None,
                        g_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same features and last g from the causal Triton kernel, with no complex tensor in the
        forward or backward graph. The kernel reads time-major (T, N, 2) (re, im) parts, chain
        ``n = b·C + c``::

            e_t = a_t − z = (V_t − Re z,  −Γ_t − Im z)      (Hermitian: −Im z)
            β   = h²      = (h², 0)                          (every link, t < T − 1)
            σ   = h² g_prev
        """
        from breath.ops.bk_resolvent_triton import bk_causal_triton_real  # imports triton: only once chosen

        B, T, C = potential.shape
        z_re, z_im = self.spectral_shift_parts()
        e_im = -z_im if gamma is None else -gamma - z_im
        time_major = lambda x: x.expand(B, T, C).transpose(0, 1)  # noqa: E731  (B, T, C) → (T, B, C)
        e = torch.stack((time_major(potential - z_re), time_major(e_im)), dim=-1).view(T, B * C, 2)
        hop2 = self.hopping.to(potential.dtype).square()
        beta = torch.stack((hop2, torch.zeros_like(hop2)), dim=-1).expand(T - 1, B, C, 2).reshape(T - 1, B * C, 2)
        sigma = None if g_prev is None else (hop2.unsqueeze(-1) * g_prev).reshape(B * C, 2)
        g = bk_causal_triton_real(e, beta, sigma).view(T, B, C, 2)
        features = g.permute(1, 0, 3, 2).reshape(B, T, 2 * C)  # (B, T, 2C): all Re g, then all Im g
        # clone: a view would keep all of g alive inside the state
        return features, g[-1].clone()
