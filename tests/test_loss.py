"""``breath.loss``: the one loss of validation and ``breath eval`` (fp32, per position)."""

import math

import pytest
import torch
import torch.nn.functional as F

from breath import ModelConfig, build_model
from breath.data.windows import WindowDataset, make_loader
from breath.loss import perplexity, position_loss_sums

TINY = dict(d_model=32, n_layers=1, num_heads=2, head_dim=16, ffn_dim=64, n_seq=16, memory_chunk=8,
            vocab_size=50, dropout=0.0)


def test_position_sums_are_the_mean_cross_entropy_in_fp32_even_under_autocast():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY)).eval()
    windows = WindowDataset(torch.randint(0, 50, (200,)), 16)
    loader = make_loader(windows, 4, shuffle=False, drop_last=False)
    sums, count = position_loss_sums(model, loader, torch.device("cpu"), num_batches=2)
    assert count == 8 and sums.shape == (16,) and sums.dtype == torch.float64
    inputs, labels = zip(*list(loader)[:2])
    with torch.no_grad():
        logits = model(torch.cat(inputs)).logits
    expected = F.cross_entropy(logits.flatten(0, 1), torch.cat(labels).flatten())
    assert (sums.sum() / (count * 16)).item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not reach the loss
        under_autocast, _ = position_loss_sums(model, loader, torch.device("cpu"), num_batches=2)
    assert torch.equal(under_autocast, sums)


def test_perplexity_overflows_to_inf():
    assert perplexity(2.0) == pytest.approx(math.exp(2.0)) and perplexity(800.0) == math.inf
