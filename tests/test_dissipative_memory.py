import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from breath.ops.consolidation import ConsolidationConfig
from breath.ops.dissipative_memory import MemoryState, dissipative_memory, dissipative_memory_recurrent

ETA = 0.5
# Small chunks and thresholds that split random 8-dim memories both ways, so that every branch of
# the consolidation is taken in the equivalence tests (checked by mixed()).
CFG = ConsolidationConfig(chunk=8, snr_threshold=1.1, resonance_threshold=0.5, lyapunov_tolerance=1.0)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def inputs(B=2, H=3, T=29, d=8, dtype=torch.float64, gamma_scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(B, H, T, d, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, H, T, d, generator=g, dtype=torch.float64)
    gamma = torch.rand(B, H, T, generator=g, dtype=torch.float64) * gamma_scale
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return [x.to(dtype) for x in (q, k, v, gamma)], basis.to(dtype)


def mixed(flag: torch.Tensor) -> bool:
    return bool(flag.any()) and not bool(flag.all())


def assert_same(a, b, rtol=1e-10):
    """Outputs, states and stats agree: floats to rtol (relative to the largest entry), flags exactly."""
    (o_a, state_a, stats_a), (o_b, state_b, stats_b) = a, b
    for x, y in [(o_a, o_b), *zip(state_a, state_b)]:
        torch.testing.assert_close(x, y, rtol=0, atol=rtol * y.abs().max().item())
    assert stats_a.keys() == stats_b.keys()
    for name in stats_a:
        if stats_a[name].is_floating_point():
            torch.testing.assert_close(stats_a[name], stats_b[name], rtol=rtol, atol=0)
        else:
            assert torch.equal(stats_a[name], stats_b[name]), name


def prefix_state(T=13):
    """A realistic mid-chunk state: the memory after T tokens of another sequence (T % chunk ≠ 0)."""
    (q, k, v, gamma), basis = inputs(T=T, seed=1)
    return dissipative_memory_recurrent(q, k, v, gamma, ETA, basis, CFG)[1]


def test_chunked_matches_recurrent_in_float32():
    (q, k, v, gamma), basis = inputs(T=29, dtype=torch.float32)
    assert_same(dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=5),
                dissipative_memory_recurrent(q, k, v, gamma, ETA, basis, CFG, pos=5), rtol=1e-5)


@pytest.mark.parametrize("pos, with_state", [(0, False), (5, False), (13, True)])
def test_chunked_matches_recurrent(pos, with_state):
    (q, k, v, gamma), basis = inputs(T=29)
    state = prefix_state(pos) if with_state else None
    chunked = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=pos, state=state)
    reference = dissipative_memory_recurrent(q, k, v, gamma, ETA, basis, CFG, pos=pos, state=state)
    assert_same(chunked, reference)
    stats = reference[2]
    assert stats["snr"].shape == (2, 3, (pos + 29) // 8 - pos // 8)
    assert mixed(stats["low_snr"]) and mixed(stats["stable"]) and (stats["resonant_modes"] < 8).any()


def test_ragged_pieces_equal_one_call():
    (q, k, v, gamma), basis = inputs(T=37)
    pos0 = 3
    whole = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=pos0)
    for op in (dissipative_memory, dissipative_memory_recurrent):
        outputs, stats, state, start = [], [], None, 0
        for length in [5, 1, 13, 8, 10]:
            piece = slice(start, start + length)
            o, state, s = op(q[:, :, piece], k[:, :, piece], v[:, :, piece], gamma[:, :, piece], ETA, basis, CFG,
                             pos=pos0 + start, state=state)
            outputs.append(o)
            stats.append(s)
            start += length
        pieces = (torch.cat(outputs, 2), state, {n: torch.cat([s[n] for s in stats], -1) for n in whole[2]})
        assert_same(pieces, whole)


@pytest.mark.parametrize("warm", [True, False])
def test_state_vector_starts_the_next_power_iteration(warm):
    # One step per boundary so the start matters. Warm: another vector in the state changes the
    # next boundary's SNR and the vector that comes back; cold: the state's vector is ignored.
    cfg = ConsolidationConfig(chunk=8, snr_threshold=1.1, resonance_threshold=0.5, lyapunov_tolerance=1.0,
                              power_iterations=1, power_warm_start=warm)
    (q, k, v, gamma), basis = inputs(T=20)
    state = prefix_state(13)
    other = state._replace(vector=F.normalize(torch.randn_like(state.vector), dim=-1))
    a = dissipative_memory(q, k, v, gamma, ETA, basis, cfg, pos=13, state=state)
    b = dissipative_memory(q, k, v, gamma, ETA, basis, cfg, pos=13, state=other)
    assert torch.equal(a[2]["snr"][..., 0], b[2]["snr"][..., 0]) != warm
    assert_same(dissipative_memory_recurrent(q, k, v, gamma, ETA, basis, cfg, pos=13, state=other), b)


def test_one_token_at_a_time_equals_one_call():
    (q, k, v, gamma), basis = inputs(T=20)
    whole = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=6)
    state, outputs = None, []
    for t in range(20):
        o, state, _ = dissipative_memory(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                         gamma[:, :, t:t + 1], ETA, basis, CFG, pos=6 + t, state=state)
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, 2), whole[0], rtol=1e-10, atol=1e-12)
    for x, y in zip(state, whole[1]):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_state_after_a_boundary_follows_the_definitions():
    # pos 5, 29 tokens, chunk 8: the last boundary follows the token at absolute position 31 (index
    # 26); tokens 27 and 28 run under the adjustments that boundary set, read off its stats here.
    (q, k, v, gamma), basis = inputs(T=29)
    o, state, stats = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=5)
    snr, stable = stats["snr"][..., -1], stats["stable"][..., -1]
    def pick(condition, if_true, if_false):
        f64 = torch.float64
        return torch.where(condition, torch.tensor(if_true, dtype=f64), torch.tensor(if_false, dtype=f64))

    gamma_mult = pick(snr < CFG.snr_threshold, CFG.gamma_boost, 1.0)
    gamma_add = pick(stable, 0.0, CFG.lyapunov_gamma_step)
    eta = ETA * pick(snr > CFG.snr_threshold, CFG.eta_boost, 1.0)
    torch.testing.assert_close(state.gamma_mult, gamma_mult, rtol=0, atol=0)
    torch.testing.assert_close(state.gamma_add, gamma_add, rtol=0, atol=0)
    torch.testing.assert_close(state.eta_mult * ETA, eta, rtol=0, atol=0)
    energy_after_projection = stats["resonance_energy"][..., -1]  # energy of the kept modes
    torch.testing.assert_close(state.energy_start, energy_after_projection, rtol=1e-12, atol=0)
    log_decay = -(gamma[:, :, 27:29] * gamma_mult[..., None] + gamma_add[..., None]).sum(-1)
    torch.testing.assert_close(state.log_decay, log_decay, rtol=1e-12, atol=0)
    # tokens 19..26 (positions 24..31) ran under the adjustments the boundary before set
    previous_mult = pick(stats["snr"][..., -2] < CFG.snr_threshold, CFG.gamma_boost, 1.0)
    previous_add = pick(stats["stable"][..., -2], 0.0, CFG.lyapunov_gamma_step)
    effective = (gamma[:, :, 19:27] * previous_mult[..., None] + previous_add[..., None]).mean(-1)
    torch.testing.assert_close(stats["effective_gamma"][..., -1], effective, rtol=1e-12, atol=0)
    assert mixed(stats["low_snr"][..., -1]) and mixed(stable)


def loss_and_grads(op, q, k, v, gamma, basis, state, weights):
    leaves = [x.clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
    o, new_state, _ = op(*leaves[:4], ETA, basis, CFG, pos=13, state=state._replace(S=leaves[4]))
    loss = (o * weights[0]).sum() + (new_state.S * weights[1]).sum()
    return torch.autograd.grad(loss, leaves)


def test_gradients_match_recurrent():
    (q, k, v, gamma), basis = inputs(T=29)
    state = prefix_state(13)
    weights = (torch.randn_like(q), torch.randn_like(state.S))
    chunked = loss_and_grads(dissipative_memory, q, k, v, gamma, basis, state, weights)
    reference = loss_and_grads(dissipative_memory_recurrent, q, k, v, gamma, basis, state, weights)
    for name, a, b in zip(["q", "k", "v", "gamma", "S0"], chunked, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("snr_threshold", [0.25, 10.0])
def test_gradcheck(snr_threshold):
    # σ_max ≥ ‖S‖_F/√d puts snr in [1/2, √d/2] = [1/2, 1] for 4×4 memories, so these thresholds make
    # the SNR decision constant (always boost η / always boost Γ); a huge tolerance keeps every head
    # stable (both checked). The seed is one whose resonance masks are unchanged by ±25% of their threshold
    # (asserted below), so finite differences cannot flip a mode.
    cfg = ConsolidationConfig(chunk=4, snr_threshold=snr_threshold, resonance_threshold=0.5,
                              lyapunov_tolerance=1e9)
    (q, k, v, gamma), basis = inputs(B=1, H=2, T=10, d=4, gamma_scale=0.5, seed=18)
    S0 = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(18))

    def op(q, k, v, gamma, S0, cfg=cfg):
        state = MemoryState.zeros(1, 2, 4, torch.float64)._replace(S=S0)
        o, state, stats = dissipative_memory(q, k, v, gamma, ETA, basis, cfg, pos=1, state=state)
        return o, state.S, stats

    stats = op(q, k, v, gamma, S0)[2]
    assert (stats["low_snr"] == (snr_threshold > 1)).all() and stats["stable"].all()
    modes = stats["resonant_modes"]
    assert (modes < 4).any()  # the projection is active
    for scale in (0.8, 1.25):
        shifted = ConsolidationConfig(chunk=4, snr_threshold=snr_threshold, resonance_threshold=0.5 * scale,
                                      lyapunov_tolerance=1e9)
        assert torch.equal(op(q, k, v, gamma, S0, shifted)[2]["resonant_modes"], modes)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, gamma, S0)]
    assert torch.autograd.gradcheck(lambda *x: op(*x)[:2], leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("j", [1, 4, 5, 12, 20])
def test_causality(dtype, j):
    (q, k, v, gamma), basis = inputs(T=24, dtype=dtype)
    o = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=3)[0]
    perturbed = [x.clone() for x in (q, k, v, gamma)]
    for x in perturbed:
        x[:, :, j] += 1.0
    o2 = dissipative_memory(*perturbed, ETA, basis, CFG, pos=3)[0]
    assert torch.equal(o[:, :, :j], o2[:, :, :j])
    assert not torch.equal(o[:, :, j], o2[:, :, j])


def test_sequences_are_independent():
    (q, k, v, gamma), basis = inputs(B=3, T=29)
    batch = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=2)
    row = dissipative_memory(q[1:2], k[1:2], v[1:2], gamma[1:2], ETA, basis, CFG, pos=2)
    batch_row = (batch[0][1:2], MemoryState(*(x[1:2] for x in batch[1])), {n: s[1:2] for n, s in batch[2].items()})
    assert_same(row, batch_row, rtol=1e-13)


def test_no_hidden_state():
    (q, k, v, gamma), basis = inputs(T=29)
    first = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=4)
    second = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=4)
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    assert all(torch.equal(first[2][n], second[2][n]) for n in first[2])


def test_none_state_is_the_empty_memory():
    (q, k, v, gamma), basis = inputs(T=29)
    empty = MemoryState.zeros(2, 3, 8, torch.float64)
    assert_same(dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=4),
                dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=4, state=empty), rtol=0)


def test_no_boundary_gives_empty_stats():
    (q, k, v, gamma), basis = inputs(T=5)
    _, state, stats = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, pos=1)
    assert set(stats) == {"snr", "low_snr", "resonant_modes", "resonance_energy", "stable", "energy",
                          "effective_gamma"}
    assert all(s.shape == (2, 3, 0) for s in stats.values())
    assert stats["stable"].dtype == stats["low_snr"].dtype == torch.bool
    assert torch.equal(state.gamma_mult, torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype, expected", [(torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                                             (torch.float64, torch.float64)])
def test_computes_in_the_state_dtype(dtype, expected):
    (q, k, v, gamma), basis = inputs(T=10, dtype=dtype)
    o, state, stats = dissipative_memory(q, k, v, gamma, ETA, basis, CFG)
    assert o.dtype == state.S.dtype == state.log_decay.dtype == stats["snr"].dtype == expected
    given = MemoryState.zeros(2, 3, 8, torch.float64)
    assert dissipative_memory(q, k, v, gamma, ETA, basis, CFG, state=given)[0].dtype == torch.float64


def test_no_host_reads_of_tensor_values():
    # Meta tensors have shapes but no values: any .item(), bool(tensor) or Python branch on a value
    # raises, so the op (forward and backward) running here cannot synchronise on one.
    q = torch.empty(2, 3, 20, 8, device="meta", requires_grad=True)
    gamma = torch.empty(2, 3, 20, device="meta", requires_grad=True)
    basis = torch.empty(8, 8, device="meta")
    o, state, stats = dissipative_memory(q, q, q, gamma, ETA, basis, CFG, pos=3)
    (o.sum() + state.S.sum()).backward()
    assert o.shape == q.shape and stats["snr"].shape == (2, 3, 2) and q.grad.shape == q.shape


def test_auto_backend_on_cpu_is_the_reference_path():
    (q, k, v, gamma), basis = inputs(T=20)
    auto = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, use_triton=None)
    reference = dissipative_memory(q, k, v, gamma, ETA, basis, CFG, use_triton=False)
    assert torch.equal(auto[0], reference[0]) and torch.equal(auto[1].S, reference[1].S)


# ---- behaviour of the consolidation inside the op (d = 64, chunk = 64, default thresholds) ----

D, CHUNK = 64, 64
DEFAULT = ConsolidationConfig(chunk=CHUNK)


def repeated_writes(B, H, T, seed=0):
    """The same unit key and value at every token of each head (coherent pumping); q = k."""
    g = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(B, H, 1, D, generator=g, dtype=torch.float64), dim=-1).expand(B, H, T, D)
    v = torch.randn(B, H, 1, D, generator=g, dtype=torch.float64).expand(B, H, T, D)
    return k, k, v


def random_writes(B, H, T, seed=0):
    (q, k, v, _), _ = inputs(B, H, T, D, seed=seed)
    return q, k, v


def run(qkv, base_gamma, cfg=DEFAULT):
    q, k, v = qkv
    B, H, T, _ = q.shape
    basis = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64))[0]
    return dissipative_memory(q, k, v, torch.full((B, H, T), base_gamma, dtype=torch.float64), 1.0, basis, cfg)


def correlated_writes(B, H, T, cosine, seed=0):
    """Unit keys with mean pairwise cosine ≈ ``cosine`` (a shared direction plus noise), as a real
    model's keys are correlated; random values; q = k."""
    g = torch.Generator().manual_seed(seed)
    shared = F.normalize(torch.randn(B, H, 1, D, generator=g, dtype=torch.float64), dim=-1)
    noise = F.normalize(torch.randn(B, H, T, D, generator=g, dtype=torch.float64), dim=-1)
    k = F.normalize(math.sqrt(cosine) * shared + math.sqrt(1 - cosine) * noise, dim=-1)
    return k, k, torch.randn(B, H, T, D, generator=g, dtype=torch.float64)


RAW = ConsolidationConfig(chunk=CHUNK, lyapunov_gamma_step=0.0)  # the diagnostic alone, no reaction


@pytest.mark.parametrize("writes", [random_writes, repeated_writes])
def test_vanishing_dissipation_is_flagged(writes):
    # Γ → 0 with η = 1: nothing dissipates, every chunk adds energy, every boundary is unstable.
    for gamma in (0.0, 1e-4):
        assert not run(writes(2, 4, 6 * CHUNK), gamma, RAW)[2]["stable"].any()
    # with the monitor's reaction (Γ + step after an unstable boundary) the memory recovers
    reacting = run(writes(2, 4, 6 * CHUNK), 1e-4)[2]["stable"]
    assert not reacting[..., 0].any() and reacting.any()


@pytest.mark.parametrize("cosine", [0.0, 0.25, 1.0])
def test_healthy_dissipation_is_stable_however_the_writes_correlate(cosine):
    # Γ at the default floor and at the initial value: keys as correlated as a real model's
    # (mean cosine 0.24 measured) or identical (pure pumping) are no instability.
    for gamma in (0.01, 0.02):
        assert run(correlated_writes(2, 4, 6 * CHUNK, cosine), gamma, RAW)[2]["stable"].all()


@pytest.mark.parametrize("gamma", [0.0, 0.002, 0.005, 0.008, 0.009, 0.01, 0.1, 1.0])
def test_first_boundary_follows_the_dissipation_bound(gamma):
    # From an empty memory (E0 = 0) the rule reads τ(1 − Λ) ≥ 1 with Λ = e^{−2·chunk·Γ}: stable iff
    # Γ ≥ ln(τ/(τ−1)) / (2·chunk) = 0.00858 (τ 1.5, chunk 64), whatever was written.
    threshold = math.log(DEFAULT.lyapunov_tolerance / (DEFAULT.lyapunov_tolerance - 1)) / (2 * CHUNK)
    for writes in (random_writes, repeated_writes):
        stats = run(writes(1, 4, CHUNK), gamma)[2]
        assert stats["stable"].all() if gamma >= threshold else not stats["stable"].any()
        torch.testing.assert_close(stats["effective_gamma"], torch.full_like(stats["effective_gamma"], gamma),
                                   rtol=1e-12, atol=1e-15)


def test_stable_ratio_rises_with_decay():
    gammas = (0.0, 0.002, 0.004, 0.006, 0.0086, 0.01)
    ratios = [run(correlated_writes(2, 4, 8 * CHUNK, 0.25), g, RAW)[2]["stable"].double().mean().item()
              for g in gammas]
    assert ratios == sorted(ratios) and ratios[0] == 0.0 and ratios[-1] == 1.0
    assert any(0 < r < 1 for r in ratios)


def test_gamma_boost_does_not_compound():
    # One chunk of random writes (low SNR: the next chunk's Γ is boosted), then chunks without writes:
    # the memory only decays, so o_{t+1} = λ o_t with q fixed and the decay rate is observable.
    # It must be Γ·gamma_boost in every quiet chunk, not Γ·gamma_boost^n.
    n, G = 5, 0.05
    q, k, v = random_writes(1, 2, n * CHUNK)
    k = k.clone()
    k[:, :, CHUNK:] = 0
    q = q[:, :, :1].expand_as(q)
    o, _, stats = run((q, k, v), G)
    assert stats["low_snr"].all() and stats["stable"][..., 1:].all()
    quiet = o[:, :, CHUNK:].unflatten(2, (n - 1, CHUNK)).norm(dim=-1)  # (B, H, chunk index, t)
    rate = -(quiet[..., 1:] / quiet[..., :-1]).log()
    torch.testing.assert_close(rate, torch.full_like(rate, G * DEFAULT.gamma_boost), rtol=1e-9, atol=0)


def test_eta_boost_and_lyapunov_step_do_not_compound():
    # Three chunks of repeated clean writes at a Γ too small to balance them (unstable), then three
    # quiet chunks (k = 0: the energy decays, stable). With q = k_clean, o_t = c_t v and c_t = λ c_{t−1} + η_eff inside a chunk,
    # so three consecutive c's give λ = (c_{t+1} − c_t)/(c_t − c_{t−1}) and η_eff = c_t − λ c_{t−1}.
    # The memory stays clean (snr = √d/2 = 4 > 2): η·eta_boost while writing after the first chunk,
    # never eta_boost^n; and Γ + step exactly in the chunks after unstable boundaries, never n·step.
    n, G = 6, 0.001
    cfg = ConsolidationConfig(chunk=CHUNK, lyapunov_gamma_step=0.001)
    q, k, v = repeated_writes(1, 2, n * CHUNK)
    k = k.clone()
    k[:, :, 3 * CHUNK:] = 0
    o, _, stats = run((q, k, v), G, cfg)
    c = ((o * v).sum(-1) / v.square().sum(-1)).unflatten(2, (n, CHUNK))  # (B, H, chunk index, t)
    lam = (c[..., 2:] - c[..., 1:-1]) / (c[..., 1:-1] - c[..., :-2])
    eta = c[..., 2:] - lam * c[..., 1:-1]
    assert not stats["low_snr"].any()
    expected_eta = torch.tensor([1.0, DEFAULT.eta_boost, DEFAULT.eta_boost, 0.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(eta, expected_eta[:, None].expand_as(eta), rtol=1e-8, atol=1e-8)
    unstable = ~stats["stable"][..., : n - 1]
    assert unstable[..., :3].all() and not unstable[..., 4:].any()
    expected_rate = G + cfg.lyapunov_gamma_step * torch.cat([torch.zeros_like(unstable[..., :1]), unstable], -1)
    torch.testing.assert_close(-lam.log(), expected_rate.double()[..., None].expand_as(lam), rtol=1e-7, atol=0)


# ------------------------------------------------------------------------- without consolidation

OFF = dataclasses.replace(CFG, enabled=False)
# The settings under which every boundary's consolidation leaves the memory as it is: no boost, no
# Lyapunov step, every mode with energy kept (a mode without any contributes nothing to drop).
NEUTRAL = dataclasses.replace(CFG, gamma_boost=1.0, eta_boost=1.0, resonance_threshold=0.0, lyapunov_gamma_step=0.0)


@pytest.mark.parametrize("pos, with_state", [(0, False), (13, True)])
def test_without_consolidation_is_the_neutral_consolidation(pos, with_state):
    """Consolidation off computes, bit for bit, what the consolidation computes when each of its
    actions is neutral, over several boundaries; it reports no stats and sets no adjustment."""
    (q, k, v, gamma), basis = inputs(T=29)
    state = prefix_state(pos)._replace(gamma_mult=torch.ones(2, 3, dtype=torch.float64),
                                       gamma_add=torch.zeros(2, 3, dtype=torch.float64),
                                       eta_mult=torch.ones(2, 3, dtype=torch.float64)) if with_state else None
    for op in (dissipative_memory, dissipative_memory_recurrent):
        o, new, stats = op(q, k, v, gamma, ETA, basis, OFF, pos=pos, state=state)
        o_n, new_n, stats_n = op(q, k, v, gamma, ETA, basis, NEUTRAL, pos=pos, state=state)
        assert stats == {} and stats_n["snr"].shape[-1] == (pos + 29) // 8 - pos // 8 >= 3
        assert torch.equal(o, o_n) and torch.equal(new.S, new_n.S)
        assert torch.equal(new.gamma_mult, new_n.gamma_mult) and torch.equal(new.eta_mult, new_n.eta_mult)


def test_without_consolidation_the_adjustments_carried_in_persist():
    """A state from a consolidating model enters with pending adjustments; without consolidation no
    boundary resets them: every chunk runs under them (chunked = recurrent), and they leave unchanged."""
    (q, k, v, gamma), basis = inputs(T=29)
    state = prefix_state(13)._replace(gamma_mult=torch.full((2, 3), 2.0, dtype=torch.float64),
                                      gamma_add=torch.full((2, 3), 0.01, dtype=torch.float64),
                                      eta_mult=torch.full((2, 3), 1.5, dtype=torch.float64))
    chunked = dissipative_memory(q, k, v, gamma, ETA, basis, OFF, pos=13, state=state)
    reference = dissipative_memory_recurrent(q, k, v, gamma, ETA, basis, OFF, pos=13, state=state)
    assert_same(chunked, reference)
    for name in ("gamma_mult", "gamma_add", "eta_mult", "energy_start", "vector"):
        assert torch.equal(getattr(chunked[1], name), getattr(state, name)), name
    torch.testing.assert_close(chunked[1].log_decay, state.log_decay - (gamma * 2.0 + 0.01).sum(-1))


def test_gradients_without_consolidation_match_recurrent():
    (q, k, v, gamma), basis = inputs(T=21)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, gamma)]
    grads = []
    for op in (dissipative_memory, dissipative_memory_recurrent):
        o, state, _ = op(*leaves, ETA, basis, OFF, pos=3)
        grads.append(torch.autograd.grad((o.square().sum() + state.S.sum()), leaves))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
