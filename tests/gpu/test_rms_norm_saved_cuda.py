"""What the CPU accounting of saved activations (benchmarks/saved_activations.py) assumes of CUDA, on a
GPU (skipped without one).

    PYTHONPATH=src python -m pytest -q -n 0 tests/gpu/test_rms_norm_saved_cuda.py

On the CPU ``F.rms_norm`` is decomposed and autograd keeps its input and the normalised input; the
report docs/reports/2026-12-04-saved-activations.md assumes that on CUDA the fused kernel keeps the
input and 1/rms only, so the CPU table overstates phase2's ``memory.norm`` by one float32 (B, H, T, d)
tensor a layer.
"""

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_rms_norm_on_cuda_keeps_its_input_and_no_normalised_copy():
    x = torch.randn(4, 8, 1024, 64, device="cuda", requires_grad=True)
    weight = torch.ones(64, device="cuda", requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = F.rms_norm(x, (64,), weight, eps=torch.finfo(torch.float32).eps)
    full = {t.untyped_storage().data_ptr() for t in saved if t.numel() == x.numel()}
    assert full == {x.untyped_storage().data_ptr()}, [(tuple(t.shape), t.dtype) for t in saved]
    y.sum().backward()
