"""GPU: the memory's state pass (warm-started power iteration carried in the state) against the
PyTorch reference at the benchmark shapes, forward and backward.

    PYTHONPATH=src python -m pytest -q tests/gpu/test_memory_state.py

Both sides compute in fp32 with different summation orders, so a decision taken within rounding of
its threshold can differ: heads whose decisions differ anywhere are counted (at most one allowed)
and left out of the numeric comparison, as in benchmarks/gpu_check_memory.py.
"""

import pytest
import torch
import torch.nn.functional as F

from breath.layers.zeta import zeta_basis
from breath.ops.consolidation import ConsolidationConfig
from breath.ops.dissipative_memory import MemoryState, dissipative_memory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ETA, D = 0.1, 64


def model_inputs(B, H, T, seed):
    """q, v bf16 and unit keys fp32, as the memory layer passes them under autocast; Γ in [0.01, 0.1]."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = torch.randn(3, B, H, T, D, device="cuda", generator=g)
    gamma = 0.01 + 0.09 * torch.rand(B, H, T, device="cuda", generator=g)
    return q.bfloat16(), F.normalize(k, dim=-1), v.bfloat16(), gamma


def run(use_triton, q, k, v, gamma, cfg, pos, state, w_o, w_S):
    xs = [x.detach().clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
    o, new, stats = dissipative_memory(*xs[:4], ETA, zeta_basis(D).to(q.device), cfg, pos=pos,
                                       state=state._replace(S=xs[4]), use_triton=use_triton)
    torch.autograd.backward([o, new.S], [w_o, w_S])
    return o.detach(), [x.detach() for x in new], stats, [x.grad.float() for x in xs]


@pytest.mark.parametrize("B, H, T, warm", [(4, 8, 8192, True), (1, 8, 32768, True), (4, 8, 8192, False)])
def test_state_pass_matches_reference(B, H, T, warm):
    cfg = ConsolidationConfig() if warm else ConsolidationConfig(power_iterations=8, power_warm_start=False)
    q, k, v, gamma = model_inputs(B, H, T, seed=T + B)
    pq, pk, pv, pg = model_inputs(B, H, 100, seed=1)  # a mid-chunk state carried in, pos 100
    state = dissipative_memory(pq.float(), pk, pv.float(), pg, ETA, zeta_basis(D).to(q.device), cfg,
                               use_triton=False)[1]
    g = torch.Generator(device="cuda").manual_seed(2)
    w_o = torch.randn(B, H, T, D, device="cuda", generator=g)
    w_S = torch.randn(B, H, D, D, device="cuda", generator=g)
    o_r, state_r, stats_r, grads_r = run(False, q.float(), k, v.float(), gamma, cfg, 100, state, w_o, w_S)
    o, state_t, stats, grads = run(True, q, k, v, gamma, cfg, 100, state, w_o, w_S)

    differ = torch.zeros(B, H, dtype=torch.bool, device="cuda")
    for name in ("low_snr", "stable", "resonant_modes"):
        differ |= (stats[name] != stats_r[name]).any(-1)
    assert int(differ.sum()) <= 1, f"{int(differ.sum())} of {B * H} heads took other decisions"
    same = ~differ

    def close(x, y, tol, name):
        x, y = x[same].double(), y[same].double()
        assert (x - y).norm() <= tol * y.norm(), f"{name}: rel err {((x - y).norm() / y.norm()).item():.1e}"

    close(o, o_r, 1e-5, "o")
    for name, x, y in zip(MemoryState._fields, state_t, state_r):
        close(x, y, 1e-3 if name == "vector" else 1e-5, name)  # the vector is ill-conditioned where σ₁ ≈ σ₂
    for name in ("snr", "resonance_energy", "energy", "effective_gamma"):
        close(stats[name], stats_r[name], 1e-5, name)
    for name, x, y in zip(("q", "k", "v", "gamma", "S0"), grads, grads_r):
        close(x, y, 4e-3 if name in ("q", "v") else 1e-5, "d" + name)  # dq, dv come back in bf16
