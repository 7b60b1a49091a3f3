import math

import pytest
import torch
import torch.nn.functional as F

from breath.ops.consolidation import (
    ConsolidationConfig,
    consolidate,
    lyapunov_stable,
    memory_snr,
    power_iteration,
    resonance_projection,
    spectral_norm,
    start_vector,
)


def orthonormal(d: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0].to(dtype)


def random_writes(n: int, d: int, batch: tuple[int, ...] = (), seed: int = 0) -> torch.Tensor:
    """Sum of n uncorrelated rank-one writes k vᵀ (unit keys, Gaussian values): (*batch, d, d)."""
    g = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(*batch, n, d, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(*batch, n, d, generator=g, dtype=torch.float64)
    return k.mT @ v


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resonance_threshold_zero_is_bitwise_identity(dtype):
    S = torch.randn(3, 2, 16, 16, dtype=dtype)
    Q = orthonormal(16, dtype)
    projected, keep, _ = resonance_projection(S, Q, 0.0)
    assert keep.all()
    assert torch.equal(projected, S)
    cfg = ConsolidationConfig(resonance_threshold=0.0)
    assert torch.equal(consolidate(S, S.new_zeros(3, 2), S.new_zeros(3, 2), Q, cfg).S, S)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5, 1.0, 2.0])
def test_projection_is_orthogonal_and_never_increases_energy(threshold):
    S = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    S[0, 0] = torch.outer(torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64))
    Q = orthonormal(12)
    projected, keep, energy = resonance_projection(S, Q, threshold)
    before, after = S.square().sum((-2, -1)), projected.square().sum((-2, -1))
    assert (after <= before * (1 + 1e-12)).all()
    expected = Q @ torch.diag_embed(keep.double()) @ Q.T @ S  # Q M Qᵀ S
    torch.testing.assert_close(projected, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((energy * keep).sum(-1), after, rtol=1e-12, atol=1e-12 * before.max().item())
    # An orthogonal projection is idempotent and keeps the modes it kept (where it kept any: an
    # all-dropped memory is rounding noise, whose modes are arbitrary).
    again, keep_again, _ = resonance_projection(projected, Q, threshold)
    some = keep.any(-1)
    assert torch.equal(keep_again[some], keep[some])
    torch.testing.assert_close(again, projected, rtol=1e-12, atol=1e-12)


def test_kept_modes_and_energy_on_constructed_memory():
    d, Q = 6, orthonormal(6)
    mode_energy = torch.tensor([6.0, 3.0, 0.05, 2.0, 0.0, 1.0], dtype=torch.float64)
    rows = F.normalize(torch.randn(d, d, dtype=torch.float64), dim=-1) * mode_energy.sqrt()[:, None]
    S = Q @ rows  # so that Qᵀ S = rows: mode k carries mode_energy[k]
    mean = mode_energy.mean().item()  # 2.00833
    for threshold, kept in [(0.1, [0, 1, 3, 5]), (0.6, [0, 1, 3]), (1.2, [0, 1]), (2.0, [0])]:
        assert all(abs(e - threshold * mean) > 0.1 for e in mode_energy.tolist())  # no tie
        cfg = ConsolidationConfig(resonance_threshold=threshold)
        c = consolidate(S, torch.tensor(0.0), torch.tensor(0.0), Q, cfg)
        assert c.stats["resonant_modes"].item() == len(kept)
        torch.testing.assert_close(c.stats["resonance_energy"], mode_energy[kept].sum(), rtol=1e-12, atol=0)
        torch.testing.assert_close(c.stats["energy"], mode_energy.sum(), rtol=1e-12, atol=0)
        torch.testing.assert_close(c.energy, mode_energy[kept].sum(), rtol=1e-12, atol=0)
        torch.testing.assert_close(c.S, Q[:, kept] @ rows[kept], rtol=1e-12, atol=1e-12)


def test_snr_of_random_writes_is_about_one():
    S = random_writes(2000, 64, batch=(4,))
    snr = memory_snr(S, iterations=8)[0]
    assert ((snr > 0.7) & (snr < 1.4)).all(), snr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_snr_of_single_association_is_half_sqrt_d(dtype):
    d = 64
    S = torch.outer(torch.randn(d, dtype=dtype), torch.randn(d, dtype=dtype)) * 1e-3
    torch.testing.assert_close(memory_snr(S, iterations=8)[0], torch.tensor(math.sqrt(d) / 2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_snr_of_empty_memory_is_zero(dtype):
    S = torch.zeros(2, 3, 8, 8, dtype=dtype)
    snr = memory_snr(S, iterations=8)[0]
    assert torch.equal(snr, torch.zeros(2, 3, dtype=dtype))
    c = consolidate(S, S.new_zeros(2, 3), S.new_zeros(2, 3), orthonormal(8, dtype), ConsolidationConfig())
    for value in [c.S, c.gamma_mult, c.gamma_add, c.eta_mult, c.energy, *c.stats.values()]:
        assert not value.double().isnan().any()
    assert torch.equal(c.S, S)


def test_power_iteration_matches_spectral_norm_on_low_rank():
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(5, 32, 3, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(5, 32, 3, generator=g, dtype=torch.float64))[0]
    sigma = torch.tensor([4.0, 1.5, 0.5], dtype=torch.float64) * torch.rand(5, 1, generator=g, dtype=torch.float64)
    S = U @ torch.diag_embed(sigma) @ V.mT
    torch.testing.assert_close(spectral_norm(S, 8), torch.linalg.matrix_norm(S, 2), rtol=1e-9, atol=0)


@pytest.mark.parametrize("pattern", ["ones", "alternating", "ramp", "cosine"])
def test_start_vector_is_not_orthogonal_to_structured_directions(pattern):
    d = 64
    j = torch.arange(d, dtype=torch.float64)
    direction = {
        "ones": torch.ones(d, dtype=torch.float64),
        "alternating": (-1.0) ** j,
        "ramp": j - j.mean(),
        "cosine": torch.cos(2 * math.pi * 3 * j / d),
    }[pattern]
    # Rank one with that right singular vector: a start orthogonal to it would give exactly 0.
    S = torch.outer(torch.randn(d, dtype=torch.float64), direction)
    torch.testing.assert_close(spectral_norm(S, 1), torch.linalg.matrix_norm(S, 2), rtol=1e-12, atol=0)


def test_warm_start_continues_the_iteration():
    # n cold steps, then m steps from the vector they ended on, are n + m cold steps: what carrying
    # the vector from boundary to boundary relies on (for an unchanged S).
    S = random_writes(40, 16, batch=(3,), seed=2)
    x = start_vector(16, torch.float64, S.device).expand(3, 16)
    sigma_2, x_2 = power_iteration(S, x, 2)
    sigma_5, x_5 = power_iteration(S, x_2, 3)
    torch.testing.assert_close(power_iteration(S, x, 5), (sigma_5, x_5), rtol=1e-12, atol=1e-14)
    assert (sigma_5 > sigma_2).all()  # still converging: the continuation adds something
    torch.testing.assert_close(x_5.norm(dim=-1), torch.ones(3, dtype=torch.float64), rtol=1e-12, atol=0)


def test_warm_start_from_the_top_vector_is_exact_at_once():
    # σ₂/σ₁ = 0.95: cold steps converge slowly, a start on u₁ needs none.
    g = torch.Generator().manual_seed(3)
    U, _, Vh = torch.linalg.svd(torch.randn(16, 16, generator=g, dtype=torch.float64))
    sigma = torch.linspace(1.0, 0.1, 16, dtype=torch.float64)
    sigma[1] = 0.95
    S = U @ torch.diag(sigma) @ Vh
    assert spectral_norm(S, 2) < 0.999
    torch.testing.assert_close(power_iteration(S, Vh[0], 1)[0], torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_memory_keeps_the_unit_vector(dtype):
    x = F.normalize(torch.randn(2, 8, dtype=dtype), dim=-1)
    sigma, x_out = power_iteration(torch.zeros(2, 8, 8, dtype=dtype), x, 3)
    assert torch.equal(sigma, torch.zeros(2, dtype=dtype)) and torch.equal(x_out, x)
    # x in the null space of a non-zero S: kept too, and σ = ‖S x‖ = 0
    S = torch.zeros(8, 8, dtype=dtype)
    S[0, 1] = 2.0
    e0 = torch.zeros(8, dtype=dtype)
    e0[0] = 1.0
    sigma, x_out = power_iteration(S, e0, 3)
    assert sigma.item() == 0.0 and torch.equal(x_out, e0)


def test_consolidation_uses_the_vector_only_when_warm():
    S = random_writes(30, 16, batch=(4,), seed=5)
    Q, zero = orthonormal(16), S.new_zeros(4)
    other = F.normalize(torch.randn(4, 16, dtype=torch.float64), dim=-1)
    cold = ConsolidationConfig(power_iterations=1, power_warm_start=False)
    warm = ConsolidationConfig(power_iterations=1)
    a, b = consolidate(S, zero, zero, Q, cold), consolidate(S, zero, zero, Q, cold, other)
    assert torch.equal(a.stats["snr"], b.stats["snr"]) and torch.equal(a.vector, b.vector)
    c, d = consolidate(S, zero, zero, Q, warm), consolidate(S, zero, zero, Q, warm, other)
    assert torch.equal(c.stats["snr"], a.stats["snr"])  # None is the fixed start
    assert not torch.equal(d.stats["snr"], c.stats["snr"])
    torch.testing.assert_close(d.vector, power_iteration(S, other, 1)[1], rtol=0, atol=0)


def test_lyapunov_rule():
    # E − Λ·E0 ≤ τ(1 − Λ)·E with Λ = e^{2·log_decay}, τ = 1.5
    energy = torch.tensor([1.0, 2.0, 0.0, 100.0, 1.9, 2.1], dtype=torch.float64)
    energy_start = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    log_decay = torch.tensor([0.0, 0.0, 0.0, -5.0, 0.5 * math.log(0.5), 0.5 * math.log(0.5)], dtype=torch.float64)
    # no dissipation: strictly non-increasing (twice), nothing written; strong dissipation: anything;
    # Λ = 1/2: E ≤ 2·E0
    assert lyapunov_stable(energy, energy_start, log_decay, 1.5).tolist() == [True, False, True, True, True, False]
    # τ = 1 is the strict dE ≤ 0 whatever the dissipation
    assert lyapunov_stable(energy, energy_start, log_decay, 1.0).tolist() == [True, False, True, False, False, False]


def test_lyapunov_rule_is_next_chunk_energy_non_increasing():
    """The derivation: with E = ΛE0 + I, the next chunk injecting I again changes the energy by
    dE = I − (1 − Λ)E, and stable (τ) ⟺ dE ≤ (1 − 1/τ)·I."""
    g = torch.Generator().manual_seed(0)
    E0 = torch.rand(1000, generator=g, dtype=torch.float64) * 10
    injected = torch.rand(1000, generator=g, dtype=torch.float64) * 10
    log_decay = -torch.rand(1000, generator=g, dtype=torch.float64) * 2
    decay = torch.exp(2 * log_decay)
    E = decay * E0 + injected
    next_change = injected - (1 - decay) * E
    for tau in (1.0, 1.5, 3.0):
        stable = lyapunov_stable(E, E0, log_decay, tau)
        assert torch.equal(stable, next_change <= (1 - 1 / tau) * injected + 1e-12)
        assert mixed(stable)
    # the dissipation bound: τ(1 − Λ) ≥ 1 makes every chunk stable
    strong = tau * (1 - decay) >= 1
    assert strong.any() and lyapunov_stable(E, E0, log_decay, tau)[strong].all()


def mixed(flag: torch.Tensor) -> bool:
    return bool(flag.any()) and not bool(flag.all())


def test_pending_adjustments_are_set_fresh():
    d, Q = 64, orthonormal(64)
    cfg = ConsolidationConfig()
    noise = random_writes(500, d)
    clean = torch.outer(torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64))
    S = torch.stack([noise, clean])
    energy = S.square().sum((-2, -1))
    # no dissipation since the boundary: row 0's energy fell (stable), row 1's grew tenfold (unstable)
    c = consolidate(S, torch.stack([energy[0] * 2, energy[1] / 10]), torch.zeros(2, dtype=torch.float64), Q, cfg)
    assert c.stats["low_snr"].tolist() == [True, False]
    assert c.stats["stable"].tolist() == [True, False]
    assert c.gamma_mult.tolist() == [cfg.gamma_boost, 1.0]
    assert c.eta_mult.tolist() == [1.0, cfg.eta_boost]
    assert c.gamma_add.tolist() == [0.0, cfg.lyapunov_gamma_step]
    assert c.gamma_mult.dtype == c.gamma_add.dtype == c.eta_mult.dtype == torch.float64


def test_gradient_flows_through_the_projection_only():
    d, Q = 5, orthonormal(5)
    norms = torch.tensor([3.0, 2.0, 0.01, 1.0, 0.02], dtype=torch.float64)
    rows = F.normalize(torch.randn(d, d, dtype=torch.float64), dim=-1) * norms[:, None]
    S = (Q @ rows).requires_grad_()
    cfg = ConsolidationConfig(resonance_threshold=0.1)
    keep = consolidate(S, torch.tensor(0.0), torch.tensor(0.0), Q, cfg).stats["resonant_modes"]
    assert keep.item() == 3  # modes 2 and 4 are far below 0.1·mean: finite differences cannot flip them
    torch.autograd.gradcheck(lambda s: consolidate(s, torch.tensor(0.0), torch.tensor(0.0), Q, cfg).S, (S,))
