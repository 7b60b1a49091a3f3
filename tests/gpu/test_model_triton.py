"""On a GPU: the whole model's Triton path computes the PyTorch reference path's function (skipped
without one). Was benchmarks/gpu_check_model.py.

    PYTHONPATH=src python -m pytest -q -s -m gpu tests/gpu/test_model_triton.py

For phase2 and phase1 at the base preset (vocabulary 10,000, dropout 0, float32), B4 T1000 random
tokens, the same weights on both paths: the logits and every tensor parameter's gradient of the
cross-entropy loss, Triton against the reference, as relative errors ‖a − b‖ / ‖b‖; recurrent =
parallel with the kernels (ragged pieces continued from the state); torch.compile of the Triton
model gives its eager logits. ``-s`` shows the measured errors.
"""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from breath import ModelConfig, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BATCH, LENGTH, VOCAB = 4, 1000, 10000
PIECES = [37, 1, 200, 64, 698]  # sums to LENGTH: single tokens and pieces crossing memory chunk boundaries


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(ids[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module", params=["phase2", "phase1"])
def paths(request):
    """One arch's Triton model, the tokens, and the logits and gradients of both paths."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("base", arch=request.param, vocab_size=VOCAB, dropout=0.0).to_dict()
    with torch.device("cuda"):
        fast = build_model(ModelConfig(**{**cfg, "use_triton": "on"}))
        slow = build_model(ModelConfig(**{**cfg, "use_triton": "off"}))
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(0, VOCAB, (BATCH, LENGTH + 1), device="cuda")
    (fast_logits, fast_grads), (slow_logits, slow_grads) = loss_and_grads(fast, ids), loss_and_grads(slow, ids)
    return SimpleNamespace(arch=request.param, model=fast, ids=ids[:, :-1], logits=fast_logits,
                           grads=fast_grads, reference_logits=slow_logits, reference_grads=slow_grads)


def test_logits_match_the_reference(paths):
    error = rel(paths.logits, paths.reference_logits)
    print(f"\n{paths.arch}: logits triton vs reference {error:.2e}")
    assert error <= 1e-4


def test_tensor_gradients_match_the_reference(paths):
    errors = {n: rel(g, paths.reference_grads[n]) for n, g in paths.grads.items()}
    worst = sorted(errors.items(), key=lambda item: -item[1])[:3]
    print(f"\n{paths.arch}: worst gradients " + ", ".join(f"{n} {e:.1e}" for n, e in worst))
    # A scalar parameter's gradient (pe_gain) sums ~10⁶ signed terms: its relative error is that of a
    # cancelling sum, so it is printed above but not held to the tensors' tolerance.
    tensors = {n: e for n, e in errors.items() if paths.grads[n].numel() > 1}
    assert max(tensors.values()) <= 2e-3, {n: e for n, e in tensors.items() if e > 2e-3}


@torch.no_grad()
def test_recurrent_equals_parallel_with_kernels(paths, logits_in_pieces):
    logits, _ = logits_in_pieces(paths.model, paths.ids, PIECES)
    error = rel(logits, paths.logits)
    print(f"\n{paths.arch}: recurrent vs parallel (triton) {error:.2e}")
    assert error <= 1e-4


@torch.no_grad()
def test_compiled_matches_eager(paths):
    error = rel(torch.compile(paths.model)(paths.ids).logits, paths.logits)
    print(f"\n{paths.arch}: compiled vs eager {error:.2e}")
    assert error <= 1e-4
