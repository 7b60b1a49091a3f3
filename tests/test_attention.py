"""The transformer's attention layer: the rotary embedding is the per-pair rotation it always was
(so trained checkpoints keep their logits), its cached angles are safe across modes, it compiles
without graph breaks, and dropout 0 runs no dropout kernel."""

import pytest
import torch
import torch.nn.functional as F

from breath.layers.attention import fused_rotate, rotary, rotate, rotation
from breath.models.transformer import TransformerLM


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pos", [0, 7, 5000])
def test_rotary_is_the_pairwise_rotation_bit_for_bit(dtype, pos, rotate_each_pair):
    x = torch.randn(2, 3, 50, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    assert torch.equal(rotary(x, pos), rotate_each_pair(x, pos))
    # as the layer calls it: a strided (B, T, H, d) view of the qkv projection, positions along axis -3
    q = torch.randn(2, 50, 3, 3, 16, generator=torch.Generator().manual_seed(1)).to(dtype).unbind(2)[0]
    assert torch.equal(rotary(q, pos, dim=-3).transpose(1, 2), rotate_each_pair(q.transpose(1, 2), pos))


def test_rotary_preserves_norms_and_turns_back():
    x = torch.randn(2, 3, 50, 16, dtype=torch.float64)
    turned = rotary(x, 11)
    torch.testing.assert_close(turned.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotary(turned.flip(-2), -(11 + 49)).flip(-2), x)  # angle −(pos + t) θ undoes it


@pytest.fixture
def tiny(tiny_model):
    return lambda **overrides: tiny_model("transformer", **overrides)


def loss_of(model, ids):
    return F.cross_entropy(model(ids).logits.flatten(0, 1), ids.roll(-1, 1).flatten())


def test_inference_mode_then_training_at_the_same_shape(tiny):
    """The angles are cached per shape: ones made under inference mode must not reach autograd."""
    model, ids = tiny(), torch.randint(0, 97, (2, 24))
    with torch.inference_mode():
        reference = model(ids).logits
    loss_of(model, ids).backward()  # fails if the inference-mode angles were saved for backward
    assert torch.equal(model(ids).logits, reference)


def test_compiled_transformer_matches_eager_without_graph_breaks(tiny):
    torch._dynamo.reset()
    model, ids = tiny(), torch.randint(0, 97, (2, 24))
    explained = torch._dynamo.explain(model)(ids)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("dropout, runs_dropout", [(0.0, False), (0.1, True)])
def test_dropout_zero_runs_no_dropout_kernel(dropout, runs_dropout, tiny):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Names(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    model, ids = tiny(dropout=dropout).train(), torch.randint(0, 97, (2, 24))
    assert isinstance(model, TransformerLM)
    with Names() as seen:
        loss_of(model, ids).backward()
    dropout_ops = {"native_dropout", "bernoulli", "bernoulli_", "_fused_dropout", "native_dropout_backward"}
    assert bool(seen.names & dropout_ops) == runs_dropout, seen.names & dropout_ops


@pytest.mark.slow
def test_fused_rotation_compiles_and_matches():
    """What eager CUDA runs (``fused_rotate``: the rotation compiled for all shapes, here by inductor's
    CPU backend): the plain rotation's value and gradient, for both layouts and lengths."""
    torch._dynamo.reset()
    for shape, dim in (((2, 30, 3, 16), -3), ((2, 3, 50, 16), -2), ((2, 1, 3, 16), -3)):
        x = torch.randn(shape, dtype=torch.float32)
        length = shape[dim]
        cos, sin = rotation(3, length, 16, x.device, torch.float32)
        view = (length, *[1] * (-dim - 2), 16)
        x_fused, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
        cos, sin = cos.view(view), sin.view(view)
        fused, plain = fused_rotate(x_fused, cos, sin), rotate(x_plain, cos, sin)
        torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
        grad = torch.randn_like(x)
        fused.backward(grad)
        plain.backward(grad)
        torch.testing.assert_close(x_fused.grad, x_plain.grad, rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
