"""Zeta zeros table, position embedding, resonance basis and zeta initialisation (DESIGN §7)."""

import math

import pytest
import torch

from breath.layers.zeta import zeta_basis, zeta_init_, zeta_position_embedding, zeta_zeros

# Published values (Odlyzko's tables) of the first three zeros.
KNOWN = [14.134725141734693790, 21.022039638771554993, 25.010857580145688763]


def test_first_zeros_match_published_values():
    got = zeta_zeros(3)
    for g, want in zip(got.tolist(), KNOWN):
        assert abs(g - want) < 1e-9


def test_table_matches_mpmath_at_random_indices():
    mpmath = pytest.importorskip("mpmath")
    table = zeta_zeros(1024)
    assert torch.all(table[1:] > table[:-1])
    for n in (57, 400, 1024):
        assert abs(table[n - 1].item() - float(mpmath.zetazero(n).imag)) < 1e-9


def test_table_large_enough_for_largest_preset_and_clear_error_beyond():
    zeta_zeros(1024)  # large preset: d_model/2 = 512 PE zeros, 1024 singular values
    with pytest.raises(ValueError, match="generate_zeta_zeros"):
        zeta_zeros(10**6)


def test_position_embedding_formula_at_any_position():
    positions = torch.tensor([0, 1, 513, 10**6])
    pe = zeta_position_embedding(positions, zeta_zeros(3))
    gammas = KNOWN
    for row, p in enumerate(positions.tolist()):
        for i, g in enumerate(gammas):
            assert pe[row, 2 * i].item() == pytest.approx(math.sin(p / g), abs=1e-6)
            assert pe[row, 2 * i + 1].item() == pytest.approx(math.cos(p / g), abs=1e-6)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_basis_is_orthonormal(d):
    q = zeta_basis(d, torch.float64)
    assert torch.allclose(q.T @ q, torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, zeta_basis(d, torch.float64))


def test_basis_first_mode_is_normalised_zeta_cosine():
    d = 16
    j = torch.arange(d, dtype=torch.float64)
    first = torch.cos(2 * math.pi * KNOWN[0] * j / d)
    assert torch.allclose(zeta_basis(d, torch.float64)[:, 0], first / first.norm(), atol=1e-12)


@pytest.mark.parametrize("shape", [(48, 32), (32, 96)])
def test_zeta_init_keeps_frobenius_norm_and_singular_vectors(shape):
    torch.manual_seed(0)
    w = torch.randn(shape, dtype=torch.float64) * 0.02
    u0, _, vh0 = torch.linalg.svd(w, full_matrices=False)
    norm = w.norm()
    zeta_init_(w)
    assert w.norm().item() == pytest.approx(norm.item(), rel=1e-12)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    ratio = s / (1.0 / zeta_zeros(s.numel()))
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-9)
    # Same singular directions (up to sign) as the default init.
    assert torch.allclose((u * u0).sum(0).abs(), torch.ones(s.numel(), dtype=torch.float64), atol=1e-8)
    assert torch.allclose((vh * vh0).sum(1).abs(), torch.ones(s.numel(), dtype=torch.float64), atol=1e-8)
