"""On a GPU: ``use_triton`` auto | on | off. On an Ampere-or-newer device with Triton, ``auto`` runs
the kernels (the same outputs as ``on``, bit for bit: the same kernels) without a fallback note,
and ``off`` the PyTorch reference (close to them).

    PYTHONPATH=src python -m pytest -q -m gpu tests/gpu/test_use_triton.py
"""

import warnings

import pytest
import torch

from breath import ModelConfig, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _logits(mode: str) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, d_model=64, n_layers=2, n_seq=64, num_heads=2, head_dim=32, ffn_dim=128,
                      memory_chunk=32, dropout=0.0, use_triton=mode)
    model = build_model(cfg).cuda()
    ids = torch.randint(0, 97, (2, 64), generator=torch.Generator().manual_seed(1)).cuda()
    return model(ids).logits.float()


def test_auto_is_on_where_the_kernels_run_and_off_is_the_reference():
    assert torch.cuda.get_device_capability() >= (8, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = _logits("auto")
    notes = [str(w.message) for w in caught if str(w.message).startswith("use_triton='auto'")]
    assert notes == []  # no "... the PyTorch reference path runs" on this GPU
    on, off = _logits("on"), _logits("off")
    assert torch.equal(auto, on)
    torch.testing.assert_close(on, off, rtol=1e-3, atol=1e-3)

