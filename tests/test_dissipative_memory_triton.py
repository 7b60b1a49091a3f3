"""The Triton memory kernels against the PyTorch reference.

Without a GPU the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here, before
triton is imported (the kernels are decorated when breath.ops.dissipative_memory_triton is first
imported). With a GPU they run natively on CUDA tensors. Tiny shapes (the interpreter runs every
program in numpy), and one test at the base preset's head_dim 64 and chunk 64. Thresholds are set so that random 16-dim
memories split both ways at every decision (checked with mixed()), and the fixed seeds keep every
decision far enough from its threshold that fp32 rounding cannot flip it.
"""

import dataclasses
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from breath.ops.consolidation import ConsolidationConfig  # noqa: E402
from breath.ops.dissipative_memory import MemoryState, dissipative_memory  # noqa: E402
from breath.ops.dissipative_memory_triton import (  # noqa: E402
    LaunchSettings,
    _config_values,
    _memory,
    _pack_scalars,
    backward_launch,
    dissipative_memory_triton,
    forward_launch,
)

ETA = 0.5
D = 16
CFG = ConsolidationConfig(chunk=16, snr_threshold=1.1, resonance_threshold=0.5, lyapunov_tolerance=1.0)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
# Every dot runs at fp32 accuracy (tf32x3 on a GPU, plain fp32 under the interpreter).
RTOL = 1e-5
RTOL_OUT = 1e-5


def inputs(B=2, H=2, T=37, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g)
    k = F.normalize(torch.randn(B, H, T, D, generator=g), dim=-1)
    v = torch.randn(B, H, T, D, generator=g)
    gamma = torch.rand(B, H, T, generator=g) * 0.2
    return [x.to(DEV, dtype) for x in (q, k, v)] + [gamma.to(DEV)]


def basis():
    g = torch.Generator().manual_seed(123)
    return torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0].to(DEV, torch.float32)


def prior_state(pos=13):
    """A state at phase pos of a chunk: the memory after two chunks and pos tokens of another
    sequence, whose two boundaries left pending adjustments (a boosted Γ and an added Γ on one
    head, η boosted on three: the first chunk of a call runs under them)."""
    q, k, v, gamma = inputs(T=2 * CFG.chunk + pos, seed=7)
    return dissipative_memory(q, k, v, gamma, ETA, basis(), CFG)[1]


def mixed(flag):
    return bool(flag.any()) and not bool(flag.all())


def close(a, b, rtol=RTOL):
    """Agreement relative to the largest entry of the reference."""
    scale = b.abs().max().item() if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=0, atol=rtol * scale + 1e-30)


def assert_same(got, ref):
    (o_a, state_a, stats_a), (o_b, state_b, stats_b) = got, ref
    assert o_a.dtype == o_b.dtype and o_a.shape == o_b.shape
    close(o_a, o_b, RTOL_OUT)
    for name, a, b in zip(MemoryState._fields, state_a, state_b):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        close(a, b)
    assert stats_a.keys() == stats_b.keys()
    for name in stats_a:
        a, b = stats_a[name], stats_b[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if a.is_floating_point():
            close(a, b)
        else:
            assert torch.equal(a, b), name


@pytest.mark.parametrize("T, pos, with_state, dtype, warm", [
    (37, 0, False, torch.float32, True), (50, 13, True, torch.float32, True), (50, 13, True, torch.bfloat16, True),
    (50, 13, True, torch.float32, False)])
def test_forward_matches_reference(T, pos, with_state, dtype, warm):
    """o, new state (the power-iteration vector included) and stats; pos 13 starts mid-chunk
    (partial first segment); all end ragged. bf16 q, k, v are read as the reference reads them
    (upcast to fp32). warm=False: the power iteration starts from the fixed vector at every boundary."""
    q, k, v, gamma = inputs(T=T, dtype=dtype)
    state = prior_state(pos) if with_state else None
    cfg = CFG if warm else dataclasses.replace(CFG, power_warm_start=False)
    ref = dissipative_memory(q, k, v, gamma, ETA, basis(), cfg, pos=pos, state=state)
    got = dissipative_memory_triton(q, k, v, gamma, ETA, basis(), cfg, pos=pos, state=state)
    assert_same(got, ref)
    stats = ref[2]
    assert mixed(stats["low_snr"]) and mixed(stats["stable"]) and (stats["resonant_modes"] < D).any()


@pytest.mark.parametrize("warm", [True, False])
def test_power_iteration_matches_the_reference(warm):
    """The power iteration, warm-started or cold, gives the reference's σ, vector and decisions."""
    q, k, v, gamma = inputs(T=50)
    state = prior_state(13)
    cfg = CFG if warm else dataclasses.replace(CFG, power_warm_start=False)
    ref = dissipative_memory(q, k, v, gamma, ETA, basis(), cfg, pos=13, state=state)
    run = forward_launch(q, k, v, gamma, basis(), state.S, _pack_scalars(state), state.vector, ETA, 13, cfg)
    close(run.stat_f[..., 0], ref[2]["snr"])
    close(run.x, ref[1].vector)
    close(run.S, ref[1].S)
    assert torch.equal(run.flags[..., 0].bool(), ref[2]["low_snr"])
    assert mixed(ref[2]["low_snr"])


def test_any_adjustments_carried_in():
    """The first chunk of a call runs under the state's pending adjustments whatever they are, also
    values that no boundary of this config sets (a state from another config)."""
    q, k, v, gamma = inputs(T=50)
    adjust = dict(gamma_mult=torch.tensor([[1.0, 2.0], [1.3, 2.0]]), gamma_add=torch.tensor([[0.0, 0.01], [0.05, 0.0]]),
                  eta_mult=torch.tensor([[1.5, 1.0], [1.0, 1.2]]))
    state = prior_state(13)._replace(**{name: x.to(DEV) for name, x in adjust.items()})
    ref = dissipative_memory(q, k, v, gamma, ETA, basis(), CFG, pos=13, state=state)
    assert_same(dissipative_memory_triton(q, k, v, gamma, ETA, basis(), CFG, pos=13, state=state), ref)
    default = dissipative_memory(q, k, v, gamma, ETA, basis(), CFG, pos=13, state=prior_state(13))
    assert not torch.allclose(ref[0][:, :, :3], default[0][:, :, :3])  # the adjustments mattered


def test_call_without_boundary():
    """T = 2 from pos 13 crosses no boundary: empty stats of the right dtypes, log-decay carried on."""
    q, k, v, gamma = inputs(T=2)
    state = prior_state(13)
    ref = dissipative_memory(q, k, v, gamma, ETA, basis(), CFG, pos=13, state=state)
    got = dissipative_memory_triton(q, k, v, gamma, ETA, basis(), CFG, pos=13, state=state)
    assert got[2]["snr"].shape == (2, 2, 0)
    assert_same(got, ref)


@pytest.mark.parametrize("model_dtypes", [False, True])
def test_gradients_match_reference_autograd(model_dtypes):
    """Gradients of q, k, v, Γ and the incoming S for a loss on o and on the final S. With
    model_dtypes, q and v are bf16 and k fp32, as the memory layer passes them under autocast (the
    kernels then skip the tf32 low halves of q and v)."""
    q, k, v, gamma = inputs(T=50, seed=3)
    if model_dtypes:
        q, v = q.bfloat16(), v.bfloat16()
    state = prior_state(13)
    g = torch.Generator().manual_seed(4)
    w_o, w_S = torch.randn(2, 2, 50, D, generator=g).to(DEV), torch.randn(2, 2, D, D, generator=g).to(DEV)

    def grads(fn, **kw):
        xs = [x.clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
        o, new, stats = fn(*xs[:4], ETA, basis(), CFG, pos=13, state=state._replace(S=xs[4]), **kw)
        ((o * w_o).sum() + (new.S * w_S).sum()).backward()
        return [x.grad for x in xs], stats

    ref, stats = grads(dissipative_memory)
    got, _ = grads(dissipative_memory_triton)
    assert mixed(stats["low_snr"]) and mixed(stats["stable"]) and (stats["resonant_modes"] < D).any()
    for name, a, b in zip(("q", "k", "v", "gamma", "S"), got, ref):
        assert a.dtype == b.dtype, name
        if a.dtype == torch.bfloat16:  # the same fp32 gradient rounded to bf16 (Triton's interpreter
            # truncates where CUDA rounds to nearest): at most one bf16 ulp apart
            torch.testing.assert_close(a, b, rtol=2**-7, atol=RTOL_OUT * b.abs().max().item())
        else:
            close(a, b, RTOL if name == "S" else RTOL_OUT)


def run_production_shape(cfg, T, seed):
    """head_dim 64 with the layer's zeta basis, from pos 40 with a state carried in: the reference and
    the Triton op on the same inputs, each (o, state, stats) and the gradients of q, k, v, Γ and
    the incoming S for a loss on o and on the final S."""
    from breath.layers.zeta import zeta_basis

    d = 64
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(DEV)

    Q = zeta_basis(d).to(DEV, torch.float32)
    T0 = 40
    q0, k0, v0 = rand(1, 2, T0, d), F.normalize(rand(1, 2, T0, d), dim=-1), rand(1, 2, T0, d)
    state = dissipative_memory(q0, k0, v0, torch.rand(1, 2, T0, generator=g).to(DEV) * 0.05, 0.1, Q, cfg)[1]
    q, k, v = rand(1, 2, T, d), F.normalize(rand(1, 2, T, d), dim=-1), rand(1, 2, T, d)
    gamma = torch.rand(1, 2, T, generator=g).to(DEV) * 0.05
    w_o, w_S = rand(1, 2, T, d), rand(1, 2, d, d)

    def run(fn):
        xs = [x.clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
        o, new, stats = fn(*xs[:4], 0.1, Q, cfg, pos=T0, state=state._replace(S=xs[4]))
        ((o * w_o).sum() + (new.S * w_S).sum()).backward()
        return (o.detach(), MemoryState(*(x.detach() for x in new)), stats), [x.grad for x in xs]

    return (*run(dissipative_memory), *run(dissipative_memory_triton))


def test_production_shape_forward_and_backward():
    """head_dim 64, chunk 64 (the base preset), four chunks from pos 40 with a state carried in
    (three boundaries, ragged end): o, state, stats and every gradient against the reference.
    The default power iteration (warm start, its default steps) and the layer's zeta basis; the
    thresholds split these memories both ways at every decision."""
    cfg = ConsolidationConfig(snr_threshold=1.3, resonance_threshold=0.9, lyapunov_tolerance=1.0)
    ref, ref_grads, got, got_grads = run_production_shape(cfg, T=3 * 64 + 5, seed=11)
    assert ref[2]["snr"].shape == (1, 2, 3)
    assert_same(got, ref)
    stats = ref[2]
    assert mixed(stats["low_snr"]) and mixed(stats["stable"]) and (stats["resonant_modes"] < 64).any()
    for name, a, b in zip(("q", "k", "v", "gamma", "S"), got_grads, ref_grads):
        close(a, b, RTOL_OUT)


def test_unsupported_shapes_raise():
    q, k, v, gamma = inputs(T=8)
    with pytest.raises(ValueError, match="chunk"):
        dissipative_memory_triton(q, k, v, gamma, ETA, basis(), ConsolidationConfig(chunk=8))
    q8, k8, v8 = (x[..., :8].contiguous() for x in (q, k, v))
    with pytest.raises(ValueError, match="head_dim"):
        dissipative_memory_triton(q8, k8, v8, gamma, ETA, basis()[:8, :8], CFG)
    q128 = torch.zeros(1, 1, 4, 128, device=DEV)
    with pytest.raises(ValueError, match="head_dim"):
        dissipative_memory_triton(q128, q128, q128, gamma[:1, :1, :4], ETA, torch.eye(128, device=DEV), CFG)
    with pytest.raises(ValueError, match="float64"):
        dissipative_memory_triton(q.double(), k, v, gamma, ETA, basis(), CFG)


def test_custom_op_registration():
    """Schema, fake (meta) implementation and autograd registration of the forward op."""
    q, k, v, gamma = (x.requires_grad_() for x in inputs(B=1, T=20))
    S0 = torch.randn(1, 2, D, D, device=DEV, requires_grad=True)
    scal0 = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], device=DEV).expand(1, 2, 5).contiguous()
    x0 = MemoryState.zeros(1, 2, D, device=DEV).vector
    torch.library.opcheck(_memory.forward_op, (q, k, v, gamma, basis(), S0, scal0, x0, ETA, 3, _config_values(CFG)))


def test_config_crosses_the_custom_op_by_name():
    """The config's flat float list reads back field by field, with each field's type."""
    from breath.ops.dissipative_memory_triton import _config

    cfg = ConsolidationConfig(enabled=False, chunk=32, snr_threshold=1.3, gamma_boost=2.5, eta_boost=1.25,
                              resonance_threshold=0.2, lyapunov_gamma_step=0.03, lyapunov_tolerance=1.75,
                              power_iterations=7, power_warm_start=False)
    back = _config(_config_values(cfg))
    assert back == cfg
    assert [type(getattr(back, name)) for name in ("enabled", "chunk", "power_iterations", "power_warm_start")] == [
        bool, int, int, bool]


def test_torch_compile_full_graph(compiled_matches_eager):
    """A function calling the op compiles without graph breaks and gives the eager values and grads."""
    q, k, v, gamma = inputs(B=1, T=20)
    Q = basis()

    def f(q):
        o, state, stats = dissipative_memory_triton(2 * q, k, v, gamma, ETA, Q, CFG, pos=3)
        return o.square().sum() + state.S.sum() + stats["snr"].sum()

    compiled_matches_eager(f, q)


OFF = dataclasses.replace(CFG, enabled=False)


@pytest.mark.parametrize("rows", [4, 16])
def test_without_consolidation_matches_the_reference(rows):
    """Consolidation off (``--no-consolidation``): o, the state and every gradient against the
    reference, from a state whose pending adjustments (boosted Γ, added Γ, boosted η) persist
    through every boundary; the sequential kernels carry `rows` rows of S a program (4: four
    programs a head, 16: all of S). No stats, and no boundary is reported."""
    q, k, v, gamma = inputs(T=50, seed=3)
    adjust = dict(gamma_mult=torch.tensor([[1.0, 2.0], [1.3, 2.0]]), gamma_add=torch.tensor([[0.0, 0.01], [0.05, 0.0]]),
                  eta_mult=torch.tensor([[1.5, 1.0], [1.0, 1.2]]))
    state = prior_state(13)._replace(**{name: x.to(DEV) for name, x in adjust.items()})
    g = torch.Generator().manual_seed(4)
    w_o, w_S = torch.randn(2, 2, 50, D, generator=g).to(DEV), torch.randn(2, 2, D, D, generator=g).to(DEV)

    xs = [x.clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
    o, new, stats = dissipative_memory(*xs[:4], ETA, basis(), OFF, pos=13, state=state._replace(S=xs[4]))
    ((o * w_o).sum() + (new.S * w_S).sum()).backward()
    assert stats == {}

    launch = LaunchSettings(state_rows=rows)
    run = forward_launch(q, k, v, gamma, basis(), state.S, _pack_scalars(state), state.vector, ETA, 13, OFF, launch)
    assert run.stat_f.shape[2] == run.keep.shape[2] == 0
    assert_same((run.o, MemoryState(S=run.S, vector=run.x, **dict(zip(
        ("gamma_mult", "gamma_add", "eta_mult", "energy_start", "log_decay"), run.scal.unbind(-1)))), {}),
        (o.detach(), MemoryState(*(x.detach() for x in new)), {}))
    grads = backward_launch(w_o, w_S, q, k, v, gamma, basis(), run.s_start, run.mult, run.keep, ETA, 13, CFG.chunk,
                            False, launch)
    for name, a, b in zip(("q", "k", "v", "gamma", "S"), grads, [x.grad for x in xs]):
        close(a, b, RTOL_OUT)


def test_production_shape_without_consolidation():
    """head_dim 64, chunk 64, the public op without consolidation: 33 chunks from pos 40 with a
    state carried in (ragged end), the chains split four ways (the default 16 rows of 64)."""
    assert 64 // LaunchSettings().state_rows == 4
    ref, ref_grads, got, got_grads = run_production_shape(ConsolidationConfig(enabled=False), T=32 * 64 + 5, seed=12)
    assert_same(got, ref)
    for name, a, b in zip(("q", "k", "v", "gamma", "S"), got_grads, ref_grads):
        close(a, b, RTOL_OUT)


def test_launch_settings_and_backward_consolidation_are_checked():
    """A row count or warp count that is no power of two, and a backward told another consolidation
    setting than its forward ran (whose saved mode masks say how many boundaries it had), raise."""
    for bad in (dict(state_rows=12), dict(state_rows=0), dict(grad_warps=3)):
        with pytest.raises(ValueError, match=f"LaunchSettings.{next(iter(bad))}: got"):
            LaunchSettings(**bad)
    q, k, v, gamma = inputs(T=40)
    state = MemoryState.zeros(2, 2, D, device=DEV)
    run = forward_launch(q, k, v, gamma, basis(), state.S, _pack_scalars(state), state.vector, ETA, 0, CFG)
    with pytest.raises(ValueError, match="consolidate=False means 0 boundaries, but keep has 2"):
        backward_launch(run.o, run.S, q, k, v, gamma, basis(), run.s_start, run.mult, run.keep, ETA, 0, CFG.chunk, False)
