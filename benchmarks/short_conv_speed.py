"""Speed of the short-convolution Triton kernels on a GPU, at x (B 32, T 1024, C 1536).

    PYTHONPATH=src python benchmarks/short_conv_speed.py

Their accuracy at these shapes, for every tile below, is a test: tests/gpu/test_short_conv_triton.py.

1. Launch settings: the forward and backward launchers under a few tiles and warp counts (bf16).
2. Timings (median of CUDA-event timings after warm-up) of the forward and forward+backward
   (gradients of x and W) of the Triton op, the reference in eager mode, the reference under
   torch.compile, and F.conv1d (depthwise, on the transposed input), in bf16 and fp32.
Each part is guarded: an error is printed and the script goes on. The table printed last is the summary.
"""

from __future__ import annotations

import statistics
import time
import traceback

import torch
import torch.nn.functional as F

from breath.ops.short_conv import short_conv, short_conv_reference
from breath.ops.short_conv_triton import LaunchSettings, backward_launch, forward_launch

B, T, C, W = 32, 1024, 1536, 4
LAUNCHES = [LaunchSettings(bt, bc, nw) for bt, bc, nw in
            [(32, 128, 4), (16, 128, 4), (64, 128, 4), (128, 128, 4), (64, 64, 4), (64, 128, 8), (32, 256, 4)]]
summary: list[str] = []


def inputs(dtype: torch.dtype, with_tail: bool, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(B, T, C, device="cuda", generator=g).to(dtype)
    weight = torch.empty(C, W, device="cuda").uniform_(-0.5, 0.5, generator=g)
    tail = torch.randn(B, W - 1, C, device="cuda", generator=g).to(dtype) if with_tail else None
    dy = torch.randn(B, T, C, device="cuda", generator=g)
    return x, weight, tail, dy


def cuda_time(fn, reps: int = 30, warmup: int = 5) -> float:
    """Median milliseconds of fn over reps runs, each timed with CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def check_launches() -> None:
    x, weight, tail, dy = inputs(torch.bfloat16, True)
    dy = dy.bfloat16()
    gb = x.numel() * x.element_size() / 1e9
    for launch in LAUNCHES:
        try:
            fwd = cuda_time(lambda: forward_launch(x, weight, tail, launch))
            bwd = cuda_time(lambda: backward_launch(dy, x, weight, tail, launch))
            # Floors: forward reads x, writes y; backward reads x and dy, writes dx (tiles in bf16).
            line = (f"launch {launch}: forward {fwd * 1e3:7.1f} µs ({2 * gb / fwd * 1e3:5.0f} GB/s)  "
                    f"backward {bwd * 1e3:7.1f} µs ({3 * gb / bwd * 1e3:5.0f} GB/s)")
        except Exception as error:  # a tile that does not compile (registers, shared memory) is reported
            line = f"launch {launch}: {type(error).__name__}: {error}"
        print(line, flush=True)
        summary.append(line)


def conv1d(x, weight, tail):
    """Depthwise F.conv1d on the (B, C, T) view, left-padded with the tail (or zeros)."""
    xt = x.transpose(1, 2)
    padded = F.pad(xt, (W - 1, 0)) if tail is None else torch.cat((tail.transpose(1, 2), xt), 2)
    y = F.conv1d(padded, weight.to(x.dtype)[:, None, :], groups=x.shape[2])
    return F.silu(y).transpose(1, 2), None


def check_timings(dtype: torch.dtype) -> None:
    x, weight, _, dy = inputs(dtype, False)
    dy = dy.to(dtype)
    x.requires_grad_()
    weight.requires_grad_()
    variants = {
        "triton": lambda x, w, t: short_conv(x, w, t, use_triton=True),
        "reference eager": short_conv_reference,
        "reference compiled": torch.compile(short_conv_reference, dynamic=False),
        "F.conv1d eager": conv1d,
    }
    for name, conv in variants.items():
        try:
            started = time.perf_counter()
            fwd = cuda_time(lambda: conv(x, weight, None))
            both = cuda_time(lambda: torch.autograd.grad(conv(x, weight, None)[0], (x, weight), dy))
            line = (f"time {str(dtype)[6:]:8s} {name:20s} forward {fwd * 1e3:8.1f} µs   "
                    f"forward+backward {both * 1e3:8.1f} µs   (wall {time.perf_counter() - started:.1f} s)")
        except Exception as error:
            traceback.print_exc()
            line = f"time {str(dtype)[6:]:8s} {name:20s} {type(error).__name__}: {error}"
        print(line, flush=True)
        summary.append(line)


def main() -> None:
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for part, args in [(check_launches, ())] + [(check_timings, (d,)) for d in (torch.bfloat16, torch.float32)]:
        try:
            part(*args)
        except Exception as error:
            traceback.print_exc()
            summary.append(f"{part.__name__}{args}: {type(error).__name__}: {error}")
        torch.cuda.empty_cache()
    print("\n==== summary ====")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
