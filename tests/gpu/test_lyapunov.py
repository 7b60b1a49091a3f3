"""GPU: the Lyapunov monitor and the effective Γ on the Triton memory kernel (docs/model.md).

    PYTHONPATH=src python -m pytest -q tests/gpu/test_lyapunov.py

At the model's Γ (≥ base_decay 0.01) every chunk is stable by the dissipation bound, so the state
test's decisions never exercise the rule; here Γ straddles the bound (0.0086 at chunk 64).
"""

import pytest
import torch
import torch.nn.functional as F

from breath.layers.zeta import zeta_basis
from breath.ops.consolidation import ConsolidationConfig
from breath.ops.dissipative_memory import dissipative_memory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

D, CHUNK = 64, 64


def writes(B, H, T, cosine, seed=0):
    """Unit keys of mean pairwise cosine ≈ cosine (a shared direction plus noise), random values; q = k."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    shared = F.normalize(torch.randn(B, H, 1, D, device="cuda", generator=g), dim=-1)
    noise = F.normalize(torch.randn(B, H, T, D, device="cuda", generator=g), dim=-1)
    k = F.normalize(cosine**0.5 * shared + (1 - cosine) ** 0.5 * noise, dim=-1)
    return k, k, torch.randn(B, H, T, D, device="cuda", generator=g)


def memory(q, k, v, gamma, use_triton, cfg=ConsolidationConfig(chunk=CHUNK)):
    return dissipative_memory(q, k, v, gamma, 1.0, zeta_basis(D).cuda(), cfg, use_triton=use_triton)


def test_kernel_takes_the_references_decisions_where_the_rule_bites():
    q, k, v = writes(4, 8, 16 * CHUNK, 0.25)
    gamma = 0.012 * torch.rand(4, 8, 16 * CHUNK, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    _, state, stats = memory(q, k, v, gamma, True)
    _, state_r, stats_r = memory(q, k, v, gamma, False)
    stable = stats["stable"]
    assert stable.any() and not stable.all()
    differ = (stable != stats_r["stable"]).any(-1) | (stats["low_snr"] != stats_r["low_snr"]).any(-1)
    assert int(differ.sum()) <= 1, f"{int(differ.sum())} of 32 heads took other decisions"
    same = ~differ
    torch.testing.assert_close(stats["effective_gamma"][same], stats_r["effective_gamma"][same], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(state.log_decay[same], state_r.log_decay[same], rtol=1e-5, atol=1e-6)


def test_kernel_flags_vanishing_dissipation_and_passes_healthy_memories():
    # no reaction and no boost: the diagnostic alone, and the effective Γ is Γ
    raw = ConsolidationConfig(chunk=CHUNK, lyapunov_gamma_step=0.0, gamma_boost=1.0)
    none = torch.zeros(2, 8, 8 * CHUNK, device="cuda")
    random = writes(2, 8, 8 * CHUNK, 0.0)
    q, k, v = writes(2, 8, 1, 1.0)
    repeated = (q.expand_as(random[0]), k.expand_as(random[0]), v.expand_as(random[0]))  # pure pumping
    for q, k, v in (random, repeated):
        assert not memory(q, k, v, none, True, raw)[2]["stable"].any()
    for cosine in (0.0, 0.25, 1.0):
        q, k, v = writes(2, 8, 8 * CHUNK, cosine)
        stats = memory(q, k, v, none + 0.02, True, raw)[2]
        assert stats["stable"].all()
        torch.testing.assert_close(stats["effective_gamma"], torch.full_like(stats["effective_gamma"], 0.02),
                                   rtol=1e-5, atol=0)
