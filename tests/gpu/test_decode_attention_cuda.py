"""On a GPU: the split-KV decode-attention kernels at the base preset's decode shape, 8 heads of 64 in
bf16 over a 32K context in a buffer of 32K + 256 slots (skipped without one).

    PYTHONPATH=src python -m pytest -q -s -m gpu tests/gpu/test_decode_attention_cuda.py

The kernels against an fp32 softmax over the filled slots (slots past the length hold NaN: the
kernels must never read them), and a CUDA graph captured at one length replaying correctly at
others (the length is a device tensor and the launch depends on the shapes only).
"""

import pytest
import torch

from breath.ops.decode_attention import decode_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

HEADS, DIM, FILLED = 8, 64, 32768
CAPACITY = FILLED + 256
TOLERANCE = 2**-8  # y rounded once to bf16 (half an ulp is 2^-9 of the value), relative to max |y|


def cache(batch: int, seed: int = 0):
    """q (B, H, 1, d) and bf16 keys, values (B, H, CAPACITY, d) with NaN past FILLED."""
    g = torch.Generator("cuda").manual_seed(seed)
    q, keys, values = (torch.randn(batch, HEADS, n, DIM, device="cuda", generator=g, dtype=torch.bfloat16)
                       for n in (1, CAPACITY, CAPACITY))
    keys[:, :, FILLED:], values[:, :, FILLED:] = float("nan"), float("nan")
    return q, keys, values


def exact(q, keys, values, length: int) -> torch.Tensor:
    """The fp32 softmax over the first ``length`` slots."""
    k, v = keys[:, :, :length].float(), values[:, :, :length].float()
    return torch.softmax(q.float() @ k.transpose(-1, -2) / DIM**0.5, dim=-1) @ v


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("batch", [1, 64])
@torch.no_grad()
def test_kernels_match_the_fp32_softmax_over_the_filled_slots(batch):
    q, keys, values = cache(batch)
    length = torch.tensor(FILLED, device="cuda")
    y = decode_attention(q, keys, values, length, use_triton="on")
    error = rel_err(y, exact(q, keys, values, FILLED))
    print(f"batch {batch}: max |y − exact| / max |exact| = {error:.2e}")
    assert y.dtype == torch.bfloat16 and y.shape == (batch, HEADS, 1, DIM) and error < TOLERANCE
    # "auto" runs the kernels on a GPU, and they are deterministic
    assert torch.equal(decode_attention(q, keys, values, length), y)


@torch.no_grad()
def test_a_captured_graph_replays_at_every_length():
    q, keys, values = cache(1, seed=1)
    keys[:, :, FILLED:], values[:, :, FILLED:] = keys[:, :, :256], values[:, :, :256]  # all slots finite
    length = torch.tensor([100], device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (compiles the kernels) outside the capture
        for _ in range(2):
            decode_attention(q, keys, values, length)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = decode_attention(q, keys, values, length)
    g = torch.Generator("cuda").manual_seed(2)
    for filled in (1, 64, 65, 5000, FILLED, CAPACITY, 100):
        length.fill_(filled)
        q.copy_(torch.randn(q.shape, device="cuda", generator=g))
        graph.replay()
        assert rel_err(y, exact(q, keys, values, filled)) < TOLERANCE, filled
        assert torch.equal(y, decode_attention(q, keys, values, length)), filled  # the eager call, bit for bit
