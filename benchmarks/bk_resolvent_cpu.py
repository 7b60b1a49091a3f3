"""CPU time and memory of the BK resolvent: custom autograd Function vs autograd of the reference.

    python benchmarks/bk_resolvent_cpu.py --chains 32 --T 1024 --dtype complex64

Reports, per variant, the median wall time of forward and of forward+backward, the bytes the
autograd graph holds between forward and backward (distinct storages of the saved tensors, via
saved_tensors_hooks), the number of saved tensors, and the bytes malloc holds after the forward
(saved tensors + autograd nodes + output; glibc's mallinfo2).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
from pathlib import Path

import torch

from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.throughput import timed_on_host  # noqa: E402

FNS = {"custom": bk_resolvent, "reference": bk_resolvent_reference}


def make_inputs(chains, T, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    B, C = max(chains // 8, 1), min(chains, 8)
    a = torch.complex(torch.randn(B, C, T, dtype=rdt, generator=g), -(0.01 + 0.05 * torch.rand(B, C, T, dtype=rdt, generator=g)))
    h = (torch.rand(C, 1, dtype=rdt, generator=g) + 0.5)
    z = torch.complex(torch.randn(C, dtype=rdt, generator=g), torch.full((C,), 0.1, dtype=rdt))
    return a, h, z


def saved_bytes(fn, a, h, z, causal):
    storages = {}
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    xs = [x.clone().requires_grad_() for x in (a, h, z)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(xs[0], xs[1], xs[1], xs[2], causal=causal)
    del out
    return sum(storages.values()), count


def timeit(f, repeats):
    f()  # warm-up
    return timed_on_host(f, repeats)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use() -> int | None:
    """Bytes in use in glibc's malloc (heap + mmapped blocks), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def held_after_forward(fn, a, h, z, causal):
    """Bytes that stay allocated after the forward (saved tensors, graph nodes, output): what a
    training step holds per call until its backward."""
    xs = [x.clone().requires_grad_() for x in (a, h, z)]
    gc.collect()
    before = _malloc_in_use()
    if before is None:
        return float("nan")
    out = fn(xs[0], xs[1], xs[1], xs[2], causal=causal)
    gc.collect()
    after = _malloc_in_use()
    del out
    return after - before


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=32)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--dtype", default="complex64", choices=["complex64", "complex128"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    a, h, z = make_inputs(args.chains, args.T, dtype)
    w = torch.randn_like(a)
    rows = []
    for causal in (True, False):
        for name, fn in FNS.items():
            xs = [x.clone().requires_grad_() for x in (a, h, z)]

            def fwd():
                with torch.no_grad():
                    fn(xs[0], xs[1], xs[1], xs[2], causal=causal)

            def fwd_bwd():
                out = fn(xs[0], xs[1], xs[1], xs[2], causal=causal)
                (out * w).real.sum().backward()

            nbytes, nsaved = saved_bytes(fn, a, h, z, causal)
            rows.append(
                dict(
                    mode="causal" if causal else "full",
                    impl=name,
                    fwd_ms=1e3 * timeit(fwd, args.repeats),
                    fwd_bwd_ms=1e3 * timeit(fwd_bwd, args.repeats),
                    saved_MiB=nbytes / 2**20,
                    saved_tensors=nsaved,
                    held_MiB=held_after_forward(fn, a, h, z, causal) / 2**20,
                )
            )
    if args.json:
        print(json.dumps(rows, indent=1))
    print(f"BK resolvent on CPU ({torch.get_num_threads()} threads), chains={args.chains}, T={args.T}, {args.dtype}, "
          f"median of {args.repeats}")
    print(f"{'mode':7s} {'impl':10s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'saved MiB':>10s} {'#saved':>7s} {'held MiB':>9s}")
    for r in rows:
        print(f"{r['mode']:7s} {r['impl']:10s} {r['fwd_ms']:9.1f} {r['fwd_bwd_ms']:11.1f} {r['saved_MiB']:10.2f} "
              f"{r['saved_tensors']:7d} {r['held_MiB']:9.2f}")


if __name__ == "__main__":
    main()
