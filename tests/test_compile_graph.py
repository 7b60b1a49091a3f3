"""torch.compile captures the models with Triton kernels as one graph (no graph breaks), and the
compiled forward and backward match eager mode.

The kernels reach the compiler as opaque custom ops (``breath::bk_causal_*``, ``breath::memory_*``).
Without a GPU they run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here, before triton is
imported (as in test_bk_resolvent_triton.py). With a GPU they run natively on CUDA tensors.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch._functorch.aot_autograd import make_boxed_func  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

pytest.importorskip("triton", reason="triton is not importable: the Triton kernels cannot be tested")

from breath.ops.bk_resolvent_triton import _bk_causal, bk_causal_triton  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
ARCHS = ["phase2", "phase1"]
VOCAB, T = 64, 32


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Every test compiles from scratch (no cached graphs or recompilation counts from another)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def tiny(tiny_model):
    """A model whose every kernel is Triton (memory head_dim and chunk 16: the kernel's smallest),
    with a memory boundary in each half of a T-token sequence. On CUDA the ops choose the kernels
    themselves (use_triton="auto", the default), so that choice is traced too."""
    return lambda arch, n_layers=2: tiny_model(arch, vocab_size=VOCAB, n_layers=n_layers, n_seq=T, head_dim=16,
                                               memory_chunk=16, use_triton="auto" if DEV == "cuda" else "on").to(DEV)


def tokens():
    return torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1)).to(DEV)


def calls(model, ids):
    """The calls to compare: a training step's (diagnostics on) and a continuation from a state
    (the BK kernel then takes the previous Green's function as its σ)."""
    state = model(ids[:, : T // 2]).state
    return [(ids, {"return_diagnostics": True}), (ids[:, T // 2:], {"state": state})]


def leaves(out):
    return tree_leaves((out.logits, out.state.layers, out.diagnostics))


@pytest.mark.parametrize("arch", ARCHS)
def test_no_graph_breaks(arch, tiny):
    model, ids = tiny(arch), tokens()
    for x, kwargs in calls(model, ids):
        explained = torch._dynamo.explain(model)(x, **kwargs)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_bk_graphs_have_no_complex_tensors(arch, tiny):
    """With the Triton kernel the BK layer builds the kernel's inputs and reads its output as real
    (re, im) tensors, and keeps its state real: no node of the compiled forward or backward graph is
    complex (inductor cannot generate code for complex ops and runs each as a separate eager kernel)."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm)

    model, ids = tiny(arch, n_layers=1), tokens()
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    # the backward graphs are compiled with the forward, so nothing needs to run backward
    with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
        for x, kwargs in calls(model, ids):
            compiled(x, **kwargs)
    assert len(graphs) == 4  # forward and backward of each call
    complex_nodes = [node.format_node() for gm in graphs for node in gm.graph.nodes
                     for v in tree_leaves(node.meta.get("val"))
                     if isinstance(v, torch.Tensor) and v.is_complex()]
    assert not complex_nodes, complex_nodes


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_forward_matches_eager(arch, tiny):
    """aot_eager: the custom ops' fake implementations and autograd registrations are traced, the
    kernels run as in eager mode, so the results agree to rounding."""
    model, ids = tiny(arch, n_layers=1), tokens()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for x, kwargs in calls(model, ids):
        for got, want in zip(leaves(compiled(x, **kwargs)), leaves(model(x, **kwargs)), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_training_step_matches_eager(arch, tiny):
    """Inductor forward + backward (what ``compile: true`` training runs): same loss and gradients.
    (aot_eager cannot run phase2's backward: PyTorch's fake softplus_backward picks other strides
    than the eager kernel for the transposed Γ gradient, and a later view fails.)"""
    model, ids = tiny(arch, n_layers=1), tokens()

    def step(fn):
        model.zero_grad(set_to_none=True)
        out = fn(ids, return_diagnostics=True)
        F.cross_entropy(out.logits.flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
        return out.logits.detach(), {name: p.grad for name, p in model.named_parameters()}

    logits, grads = step(torch.compile(model, fullgraph=True))
    ref_logits, ref_grads = step(model)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, rtol=1e-4, atol=1e-5, msg=name)


def _bk_inputs(T_, N=5, sigma=True):
    g = torch.Generator().manual_seed(T_)
    e = torch.randn(T_, N, generator=g, dtype=torch.complex64) - 1.0j
    beta = 0.5 * torch.randn(T_ - 1, N, generator=g, dtype=torch.complex64)
    s = 0.3 * torch.randn(N, generator=g, dtype=torch.complex64) if sigma else None
    return [x if x is None else x.to(DEV).requires_grad_() for x in (e, beta, s)]


@pytest.mark.parametrize("T_", [1, 9])
@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("launch", [(8, 3, 32, 1, 0), (4, 3, 32, 1, 4)])  # unroll, stages, block_n, num_warps, chunk
def test_bk_custom_ops_opcheck(T_, sigma, launch):
    """Schema, fake implementation and autograd registration of the BK ops against their kernels, with
    the sequential kernel (chunk 0) and the chunked scan (T 9: three chunks of 4)."""
    e, beta, s = (x if x is None else torch.view_as_real(x.detach()).clone().requires_grad_()
                  for x in _bk_inputs(T_, sigma=sigma))
    torch.library.opcheck(_bk_causal.forward_op, (e, beta, s, *launch))
    g = _bk_causal.forward_op(e, beta, s, *launch).detach()
    torch.library.opcheck(_bk_causal.backward_op, (g, torch.randn_like(g), beta.detach(), *launch))


@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("chunk", [0, 4])
def test_bk_compiled_gradients_match_eager(sigma, chunk):
    """bk_causal_triton under torch.compile (the custom op) against eager (the autograd.Function), with
    the sequential kernel and the chunked scan."""
    def run(fn):
        xs = _bk_inputs(9, sigma=sigma)
        out = fn(*xs, unroll=4, chunk=chunk)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype).to(DEV)
        (out * w).real.sum().backward()
        return out.detach(), [x.grad for x in xs if x is not None]

    out, grads = run(torch.compile(bk_causal_triton, backend="aot_eager", fullgraph=True))
    ref, ref_grads = run(bk_causal_triton)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_bk_scan_rule_with_symbolic_length():
    """With dynamic shapes T reaches the chunk rule (scan_chunk) as a symbol: the compiled op still
    picks the chunked scan (T 260: chunks of 32) and gives the sequential kernel's g."""
    g = torch.Generator().manual_seed(0)
    T_ = 260
    e = torch.complex(torch.randn(T_, 2, generator=g), -0.1 - torch.rand(T_, 2, generator=g)).to(DEV)
    beta = torch.ones(T_ - 1, 2, dtype=torch.complex64, device=DEV)
    out = torch.compile(bk_causal_triton, backend="aot_eager", fullgraph=True, dynamic=True)(e, beta)
    torch.testing.assert_close(out, bk_causal_triton(e, beta, chunk=0), rtol=1e-5, atol=1e-5)
