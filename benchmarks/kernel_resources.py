"""Compile every Triton kernel of breath for a GPU that is not here, and print what each one costs
the chip: registers per thread, bytes spilled to local memory, shared memory per program.

    python benchmarks/kernel_resources.py                      # sm_90 (H100, H200), the installed Triton
    python benchmarks/kernel_resources.py --check --output resources.json

Why: CI tests the kernels in Triton's CPU interpreter, which runs every ``tl.dot`` in fp32 and knows
nothing of registers or shared memory. A kernel can pass every interpreter test and still fail to
compile for the GPU (a dot shape or an input precision the chip lacks, shared memory over the limit)
or spill registers on the latency-bound sequential paths. Here the ops' own launchers run at the
shapes of the base preset (the training shapes of BENCHMARKS.md, chunked prefill, a one-token
decode step, and the transformer's split-KV decode attention) under a Triton driver that knows only
its target: every launch compiles, ptxas included, and none runs (the outputs are left unwritten). Each distinct compiled variant is
listed once. Needs no GPU, only Triton with its bundled ptxas; to see what the device's Triton makes
of the kernels, put that version first on ``PYTHONPATH`` (``pip install --target DIR triton==X``).

``--check`` exits 1 if a kernel fails to compile, needs more shared memory than the target has, or
is one of the sequential chain kernels (SPILL_FREE) and spills: those walk the sequence or the
chunks one step at a time, so a spill adds local-memory latency to every step. Spills of the
kernels parallel over (chunk, head) are reported, not failed on.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# Opt-in shared memory per block (bytes), by compute capability.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
# The training shapes of issue 14 (batch, length), base preset.
TRAIN_SHAPES = ((4, 1024), (32, 1024), (4, 8192), (1, 32768))
# The kernels that carry a recurrence step by step (BK's chains and scans, the memory's per-head state
# passes): they must not spill.
SPILL_FREE = ("_bk_causal_fwd_kernel", "_bk_causal_bwd_kernel", "_bk_fwd_maps_kernel", "_bk_fwd_scan_kernel",
              "_bk_bwd_scan_kernel", "_fwd_state_kernel", "_bwd_state_kernel")
PREFILL = 2048  # a prompt continued from a state, in chunks of this many tokens (the decode benchmark's)


class TargetOnly:
    """A Triton driver that knows its target and nothing else: enough for ``JITFunction`` to compile
    a kernel, never to launch one."""

    def __init__(self, target):
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


class CompileOnly:
    """While active, every Triton launch compiles for ``target`` and returns without running; the
    compiled kernels are collected in ``self.kernels`` (one per distinct variant), each with the
    name of the case that first compiled it."""

    def __init__(self, target):
        self.target, self.kernels, self.case = target, {}, ""

    def __enter__(self):
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction

        self._run = JITFunction.run
        collector = self

        def run(fn, *args, grid, warmup, **kwargs):
            start = time.perf_counter()
            kernel = collector._run(fn, *args, grid=grid, warmup=True, **kwargs)
            if kernel.hash not in collector.kernels:
                collector.kernels[kernel.hash] = (collector.case, kernel, time.perf_counter() - start)
            return kernel

        JITFunction.run = run
        self._previous = driver._active  # None unless a driver was set: restored as found on exit
        driver.set_active(TargetOnly(self.target))
        return self

    def __exit__(self, *exc):
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction

        JITFunction.run = self._run
        driver._active = self._previous


def cases(cfg):
    """(name, thunk) pairs that call the ops' launchers at the base preset's shapes. The inputs are
    zeros of the right shape, dtype and layout: nothing runs, so their values do not matter."""
    from breath.ops import bk_resolvent_triton as bk
    from breath.ops import decode_attention_triton as attention
    from breath.ops import dissipative_memory_triton as mem
    from breath.ops import short_conv_triton as conv
    from breath.ops.consolidation import ConsolidationConfig
    from breath.ops.dissipative_memory import MemoryState

    H, d, C = cfg.num_heads, cfg.head_dim, cfg.num_heads  # BK has one chain per head and batch row
    consolidation = ConsolidationConfig.from_model(cfg)
    width = 3 * H * d  # the memory's convolution runs over its q, k, v projections
    basis = torch.eye(d)

    def bk_case(B, T, sigma, backward=True):
        def run():
            N = B * C
            e, beta = torch.zeros(T, N, 2), torch.zeros(max(T - 1, 0), N, 2)
            s = torch.zeros(N, 2) if sigma else None
            g = bk.bk_causal_triton_real(e, beta, s)
            if backward:
                bk._backward_launch(g, g, beta, bk.UNROLL, bk.STAGES, bk.BLOCK_N, bk.NUM_WARPS,
                                    bk.scan_chunk(T, N))
        return run

    def memory_case(B, T, dtype, off=0, backward=True, consolidation=consolidation):
        """dtype of q and v; k is float32 (the layer's unit keys) as in the model."""
        def run():
            q = torch.zeros(B, H, T, d, dtype=dtype)
            k = torch.zeros(B, H, T, d)
            gamma = torch.zeros(B, H, T)
            state = MemoryState.zeros(B, H, d, torch.float32, "cpu")
            f = mem.forward_launch(q, k, q, gamma, basis, state.S, mem._pack_scalars(state), state.vector,
                                   cfg.hebbian_eta, off, consolidation)
            if backward:
                mem.backward_launch(f.o, f.S, q, k, q, gamma, basis, f.s_start, f.mult, f.keep, cfg.hebbian_eta,
                                    off, consolidation.chunk, consolidation.enabled)
        return run

    def conv_case(B, T, dtype, tail, backward=True):
        def run():
            x = torch.zeros(B, T, width, dtype=dtype)
            weight = torch.zeros(width, cfg.memory_conv)
            t = torch.zeros(B, cfg.memory_conv - 1, width, dtype=dtype) if tail else None
            y = conv.forward_launch(x, weight, t)
            if backward:
                conv.backward_launch(y, x, weight, t)
        return run

    def attention_case(B, capacity):
        """The transformer's one-token step over a bf16 KV cache of ``capacity`` slots."""
        def run():
            q = torch.zeros(B, H, 1, d, dtype=torch.bfloat16)
            cache = torch.zeros(B, H, capacity, d, dtype=torch.bfloat16)
            attention.decode_attention_launch(q, cache, cache, torch.tensor([capacity]))
        return run

    out = []
    for B, T in TRAIN_SHAPES:
        out.append((f"bk train B{B} T{T}", bk_case(B, T, sigma=False)))
    out += [(f"bk prefill B1 T{PREFILL}", bk_case(1, PREFILL, sigma=True, backward=False)),
            ("bk decode B1 T1", bk_case(1, 1, sigma=True, backward=False))]
    # the memory kernels' variants depend on the dtypes and on T == 1 only; "bf16": q and v (bf16 autocast)
    out += [("memory train B4 T1024 bf16", memory_case(4, 1024, torch.bfloat16)),
            ("memory train B4 T1024 fp32", memory_case(4, 1024, torch.float32)),
            (f"memory prefill B1 T{PREFILL} bf16", memory_case(1, PREFILL, torch.bfloat16, off=5, backward=False)),
            ("memory decode B1 T1 bf16", memory_case(1, 1, torch.bfloat16, off=5, backward=False)),
            ("memory train B1 T32768 bf16 no consolidation",
             memory_case(1, 32768, torch.bfloat16, consolidation=dataclasses.replace(consolidation, enabled=False)))]
    if cfg.memory_conv:
        out += [("conv train B4 T1024 bf16", conv_case(4, 1024, torch.bfloat16, tail=False)),
                ("conv train B4 T1024 fp32", conv_case(4, 1024, torch.float32, tail=False)),
                (f"conv prefill B1 T{PREFILL} bf16", conv_case(1, PREFILL, torch.bfloat16, tail=True, backward=False)),
                ("conv decode B1 T1 bf16", conv_case(1, 1, torch.bfloat16, tail=True, backward=False))]
    out += [(f"attention decode B{B} T{capacity} bf16", attention_case(B, capacity))
            for B, capacity in ((1, 32768 + 256), (64, 32768 + 256))]
    return out


def ptxas_usage(kernel, arch: int) -> dict:
    """Registers and spills of one compiled kernel, from ``ptxas -v`` on its PTX (the ptxas and the
    floating-point fusion setting Triton itself compiled it with)."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "kernel.ptx")
        src.write_text(kernel.asm["ptx"])
        fmad = [] if kernel.metadata.enable_fp_fusion else ["--fmad=false"]
        arch_name = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        log = subprocess.run([get_ptxas(arch).path, *fmad, "-v", f"--gpu-name={arch_name}", str(src),
                              "-o", str(Path(tmp, "kernel.cubin"))], capture_output=True, text=True, check=True).stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack_frame": number(r"(\d+) bytes stack frame")}


def _constexprs(kernel) -> str:
    """The kernel's compile-time settings, as ``NAME=value`` (from the source's constexpr arguments)."""
    src = kernel.src
    names = {i: p.name for i, p in enumerate(src.fn.params)}
    items = []
    for key, value in sorted(src.constants.items(), key=lambda kv: str(kv[0])):
        index = key[0] if isinstance(key, tuple) else key
        name = names.get(index, str(index)) if isinstance(index, int) else str(index)
        if name.isupper() and not isinstance(value, torch.dtype):
            items.append(f"{name}={value}")
    return " ".join(items)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_LIMIT),
                   help="compute capability to compile for (90: H100/H200)")
    p.add_argument("--preset", default="base", help="model preset whose shapes the kernels compile at")
    p.add_argument("--check", action="store_true",
                   help="exit 1 on a compile error, shared memory over the target's limit, or a spill in a "
                        "sequential chain kernel")
    p.add_argument("--output", help="write the table as JSON (date, Triton version, command, git commit)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("TRITON_INTERPRET=1 is set: the kernels would be interpreted, not compiled; unset it")

    import triton
    from triton.backends.compiler import GPUTarget

    from benchmarks.provenance import git_commit
    from breath.models.config import ModelConfig

    cfg = ModelConfig.preset(args.preset)
    limit = SHARED_LIMIT[args.arch]
    failures, rows = [], []
    with CompileOnly(GPUTarget("cuda", args.arch, 32)) as compiler:
        for name, run in cases(cfg):
            compiler.case = name
            try:
                run()
            except Exception as error:  # a compile error names the kernel in its message
                failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    for case, kernel, seconds in compiler.kernels.values():
        usage = ptxas_usage(kernel, args.arch)
        shared = kernel.metadata.shared
        rows.append({"kernel": kernel.metadata.name, "first_case": case, "constexprs": _constexprs(kernel),
                     "num_warps": kernel.metadata.num_warps, "shared_bytes": shared, **usage,
                     "compile_s": round(seconds, 2)})
        if usage["spill_stores"] and kernel.metadata.name in SPILL_FREE:
            failures.append(f"{kernel.metadata.name} ({case}): spills {usage['spill_stores']} bytes a thread, and it "
                            "runs on a sequential chain")
        if shared > limit:
            failures.append(f"{kernel.metadata.name} ({case}): {shared} bytes of shared memory, over sm_{args.arch}'s "
                            f"{limit}")

    header = ("kernel", "warps", "regs", "spill st/ld B", "shared KB", "first compiled by", "constexprs")
    table = [(r["kernel"], str(r["num_warps"]), str(r["registers"]), f"{r['spill_stores']}/{r['spill_loads']}",
              f"{r['shared_bytes'] / 1024:.0f}", r["first_case"], r["constexprs"]) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(header)]
    print(f"Triton {triton.__version__}, sm_{args.arch}, preset {args.preset}: {len(rows)} kernel variants")
    for line in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    spilled = [r["kernel"] for r in rows if r["spill_stores"]]
    print(f"spilling: {', '.join(sorted(set(spilled))) or 'none'}")
    for failure in failures:
        print("FAILED", failure)
    if args.output:
        record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "device": f"none (compiled for sm_{args.arch}, not run)", "triton": triton.__version__,
                  "torch": torch.__version__, "command": " ".join(["kernel_resources.py", *(argv or sys.argv[1:])]),
                  **git_commit(), "preset": args.preset, "kernels": rows, "failures": failures}
        Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
