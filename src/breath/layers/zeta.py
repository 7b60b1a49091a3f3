"""Riemann-zeta zeros as frequencies: the shipped table, the position embedding, the resonance
basis and the singular-value profile used at initialisation (DESIGN §7).

The zeros ``γ_n`` (ζ(1/2 + iγ_n) = 0) are exact: ``scripts/generate_zeta_zeros.py`` computed them
once with mpmath and wrote ``zeta_zeros.txt`` beside this file, so nothing here is sampled and a
checkpoint loaded in a new process computes the same function.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch

_TABLE = Path(__file__).with_name("zeta_zeros.txt")


@lru_cache(maxsize=1)
def _zeros_table() -> tuple[float, ...]:
    lines = _TABLE.read_text().splitlines()
    return tuple(float(line) for line in lines if line and not line.startswith("#"))


def zeta_table_size() -> int:
    """How many zeros the shipped table holds."""
    return len(_zeros_table())


def zeta_zeros(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The first ``n`` zeros ``γ_1 < γ_2 < … < γ_n`` (γ_1 = 14.134725141734693…)."""
    table = _zeros_table()
    if not 0 <= n <= len(table):
        raise ValueError(
            f"zeta_zeros: asked for {n} zeros, the shipped table holds {len(table)}; "
            "regenerate it with scripts/generate_zeta_zeros.py --count N"
        )
    return torch.tensor(table[:n], dtype=dtype)


def zeta_position_embedding(positions: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """``PE(p, 2i) = sin(p / γ_i)``, ``PE(p, 2i+1) = cos(p / γ_i)`` for any integer positions.

    ``gammas`` are the first ``dim/2`` zeros (``zeta_zeros``), on the positions' device; the phase is
    computed in their precision (float64 keeps positions in the millions exact). Returns shape
    ``positions.shape + (2·len(gammas),)`` in the gammas' dtype.
    """
    phase = positions.to(gammas.dtype).unsqueeze(-1) / gammas
    return torch.stack((phase.sin(), phase.cos()), dim=-1).flatten(-2)


@lru_cache(maxsize=8)
def _zeta_basis_f64(d: int) -> torch.Tensor:
    # Cached, so built on the CPU whatever the default device: under a meta-device default (how
    # transformers' from_pretrained builds models) it would otherwise cache a tensor without data.
    with torch.device("cpu"):
        j = torch.arange(d, dtype=torch.float64).unsqueeze(1)
        angles = 2 * math.pi * j * zeta_zeros((d + 1) // 2).unsqueeze(0) / d
        raw = torch.stack((angles.cos(), angles.sin()), dim=-1).flatten(1)[:, :d]
        q, r = torch.linalg.qr(raw)
        # Fix QR's sign freedom so the basis is a deterministic function of d alone.
        return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def zeta_basis(d: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real orthonormal ``d×d`` basis whose columns are the memory's resonance modes, on the
    default device (like any factory function: a model built under ``with torch.device("cuda")``
    gets it there).

    Column pairs start as ``cos(2π γ_k j / d)`` and ``sin(2π γ_k j / d)`` (``j`` the row) and are
    orthonormalised in that order (QR in float64). The raw complex-exponential basis is not used:
    its condition number is ~9·10⁶ at d = 64 and ~4·10¹⁵ at d = 256, so its inverse is noise in
    float32, while an orthonormal basis makes the resonance step an exact orthogonal projection.
    """
    return _zeta_basis_f64(d).to(device=torch.get_default_device(), dtype=dtype)


@torch.no_grad()
def zeta_init_(weight: torch.Tensor) -> torch.Tensor:
    """Give ``weight`` the zeta singular-value profile, in place.

    With ``W = U diag(s) Vᵀ`` (the default init's SVD), set ``s_i ∝ 1/γ_i`` and rescale so that
    ``‖W‖_F`` is unchanged — the singular vectors (the default init's directions) are kept, and the
    overall scale, which sets how fast training starts, is the default's.
    """
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    profile = 1.0 / zeta_zeros(s.numel()).to(s.device)
    profile *= s.norm() / profile.norm()
    weight.copy_((u * profile) @ vh)
    return weight
