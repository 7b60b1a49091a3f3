"""The memory's short convolution (breath.layers.short_conv): the equation, and continuation from its tail."""

import pytest
import torch
import torch.nn.functional as F

from breath.layers.short_conv import ShortConv


def test_each_output_is_silu_of_the_taps_over_the_last_w_inputs():
    torch.manual_seed(0)
    conv, x = ShortConv(5, 3).double(), torch.randn(2, 7, 5, dtype=torch.float64)
    y, tail = conv(x, None)
    padded = torch.cat((torch.zeros(2, 2, 5, dtype=torch.float64), x), dim=1)
    for t in range(7):
        expected = F.silu(sum(conv.weight[:, j] * padded[:, t + j] for j in range(3)))
        torch.testing.assert_close(y[:, t], expected)
    assert torch.equal(tail, x[:, -2:])


@pytest.mark.parametrize("pieces", [[1] * 6, [1, 5], [4, 2]])
def test_calls_continued_from_the_tail_equal_one_call(pieces):
    torch.manual_seed(1)
    conv, x = ShortConv(4, 4).double(), torch.randn(3, 6, 4, dtype=torch.float64)
    whole, _ = conv(x, None)
    outs, tail, start = [], None, 0
    for size in pieces:  # pieces shorter than the tail too: the tail then mixes old and new inputs
        y, tail = conv(x[:, start : start + size], tail)
        outs.append(y)
        start += size
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-12, atol=1e-12)


def test_width_below_two_is_refused():
    with pytest.raises(ValueError, match="width must be >= 2"):
        ShortConv(4, 1)
