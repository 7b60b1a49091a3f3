"""Where a step's time goes: a training step's GPU kernels, or a decoding step's host work.

    PYTHONPATH=src python benchmarks/profile_step.py --arch phase2 --preset base --batch 32 --length 1024
    PYTHONPATH=src python benchmarks/profile_step.py --arch phase2 --decode 8192 --batch 1

Training (default): a few warm-up steps (forward + backward + AdamW, bf16 autocast, like
``throughput.py``), then counts the operators one step dispatches (views excluded) and, on a GPU,
profiles ``--steps`` steps under ``torch.profiler`` and prints each CUDA kernel's share of the GPU
time. ``--device cpu`` gives the operator counts alone (what eager launches per step)::

    PYTHONPATH=src python benchmarks/profile_step.py --arch transformer --device cpu --batch 1 --length 128

Decoding (``--decode CONTEXT``): prefill CONTEXT tokens in one pass, warm up across a chunk boundary,
then profile ``--steps`` one-token steps (a whole chunk, so boundary steps are included at their
real rate). One-token steps are bound by the host, so it prints what the host does per step: the
wall time, the operators that launch work (counted at the dispatcher, views excluded) and the top
operators by host time; on a GPU also the kernels launched and the GPU time. Runs on the CPU too
(``--device cpu``), where the PyTorch reference path runs instead of the Triton kernels. With
``--decoder`` the steps are :class:`breath.decoding.Decoder`'s (CUDA graphs on a GPU, so the host
work is a replay and the kernel count is what the graph holds); ``--decoder --compile`` profiles
its torch.compiled step (GPU only)::

    PYTHONPATH=src python benchmarks/profile_step.py --arch phase2 --decode 8192 --batch 1 --decoder --compile
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from breath import ModelConfig, build_model
from breath.decoding import Decoder

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

# Operators that only reinterpret a tensor (no kernel, no allocation worth counting).
VIEW_OPS = frozenset({
    "alias", "as_strided", "detach", "diagonal", "expand", "imag", "permute", "real", "reshape",
    "_reshape_alias", "select", "slice", "split", "split_with_sizes", "squeeze", "t", "transpose",
    "unbind", "unsqueeze", "view", "_unsafe_view", "view_as_complex", "view_as_real",
})


class OperatorCount(TorchDispatchMode):
    """Counts the ATen operators that reach the dispatcher (views excluded), by name."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name not in VIEW_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def profile_training(model, cfg: ModelConfig, batch: int, length: int, steps: int, compile: bool = False,
                     top: int = 25, device: str = "cuda") -> dict:
    """Profile ``steps`` training steps after 3 warm-up steps; prints and returns the numbers: the
    operators one eager step dispatches (views excluded; not counted when compiled: Dynamo runs nothing
    under the counting dispatch mode, so it would count the eager model) and, on CUDA, each kernel's
    share of the GPU time."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (batch, length + 1), device=device)

    def step():
        with torch.autocast(torch.device(device).type, torch.bfloat16):
            out = step_model(ids[:, :-1])
            logits = out if isinstance(out, torch.Tensor) else out.logits  # PlainGPT returns logits
        F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    title = (f"{type(model).__name__} d{cfg.d_model} L{cfg.n_layers} B{batch} T{length} "
             f"{'compiled' if compile else 'eager'} on {device}")
    result = {"operators_per_step": None, "operators": None, "gpu_ms_per_step": None, "kernels": []}
    if compile:
        print(f"\n{title}")
    else:
        with OperatorCount() as counter:
            step()
        result.update(operators_per_step=sum(counter.counts.values()), operators=dict(counter.counts.most_common()))
        print(f"\n{title}: {result['operators_per_step']} operators per step (views excluded)")
        print("operators per step: " + ", ".join(f"{name} {n}" for name, n in counter.counts.most_common(top)))
    if not cuda:
        return result
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels)
    result["gpu_ms_per_step"] = total / steps / 1e3
    result["kernels"] = [{"kernel": e.key, "share": e.self_device_time_total / total,
                          "ms_per_step": e.self_device_time_total / steps / 1e3, "calls_per_step": e.count / steps}
                         for e in sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:top]]
    print(f"{result['gpu_ms_per_step']:.2f} ms of GPU time per step, {len(kernels)} distinct kernels")
    print(f"{'share':>6}  {'ms/step':>8}  {'calls/step':>10}  kernel")
    for row in result["kernels"]:
        print(f"{row['share']:6.1%}  {row['ms_per_step']:8.3f}  {row['calls_per_step']:10.0f}  {row['kernel'][:110]}")
    return result


def profile_decoding(model, cfg: ModelConfig, args) -> dict:
    """Profile ``args.steps`` one-token steps after an ``args.decode``-token prefill; returns the numbers."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.decode), device=device)
    with torch.no_grad(), autocast:
        out = model(ids)
        token = ids[:, -1:]
        if args.decoder:
            capacity = args.decode + cfg.memory_chunk + 1 + 3 * args.steps
            decoder = Decoder(model, out.state, capacity, compile=args.compile)

            def step():
                nonlocal token
                token = decoder.step(token)[:, -1:].argmax(-1)
        else:
            def step():
                nonlocal out, token
                out = model(token, state=out.state)
                token = out.logits[:, -1:].argmax(-1)

        for _ in range(cfg.memory_chunk + 1):  # crosses a chunk boundary: its kernels compile here
            step()
        with OperatorCount() as counter:
            for _ in range(args.steps):
                step()
        sync()
        begin = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        wall = (time.perf_counter() - begin) / args.steps
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            sync()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    result = {"wall_ms_per_step": wall * 1e3,
              "operators_per_step": sum(counter.counts.values()) / args.steps,
              "kernels_per_step": sum(e.count for e in kernels) / args.steps if cuda else None,
              "gpu_ms_per_step": sum(e.self_device_time_total for e in kernels) / args.steps / 1e3 if cuda else None}
    how = ("compiled " if args.compile else "") + ("Decoder" if args.decoder else "plain") + " steps"
    print(f"\n{args.arch} {args.preset} decoding ({how}), batch {args.batch}, after {args.decode} tokens, on {device} "
          f"({args.steps} steps): {result['wall_ms_per_step']:.2f} ms per step (wall), "
          f"{result['operators_per_step']:.0f} operators per step" +
          (f", {result['kernels_per_step']:.0f} kernels and {result['gpu_ms_per_step']:.2f} ms of GPU time per step"
           if cuda else ""))
    print("operators per step: " + ", ".join(f"{name} {n / args.steps:.1f}"
                                                for name, n in counter.counts.most_common(args.top)))
    host = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    print(f"\n{'host ms/step':>12}  {'calls/step':>10}  operator (by self host time)")
    for e in sorted(host, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]:
        print(f"{e.self_cpu_time_total / args.steps / 1e3:12.3f}  {e.count / args.steps:10.1f}  {e.key[:100]}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="phase2", choices=("phase2", "phase1", "transformer", "gpt"),
                        help="gpt: plain_gpt.py's PlainGPT at the preset's sizes (training only)")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=1024, help="training: tokens per sequence")
    parser.add_argument("--decode", type=int, metavar="CONTEXT",
                        help="profile one-token decoding steps after a CONTEXT-token prefill instead of training")
    parser.add_argument("--steps", type=int, help="profiled steps (default: 3 training steps, 64 decoding steps)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (training) or the Decoder's step (with --decoder); GPU only")
    parser.add_argument("--decoder", action="store_true",
                        help="decoding: profile breath.decoding.Decoder's steps (CUDA graphs on a GPU) instead of "
                             "plain model(token, state) calls")
    parser.add_argument("--device", default="cuda", help="cuda or cpu (on the CPU: operator counts only)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.decode is not None and args.arch == "gpt":
        parser.error("--arch gpt: PlainGPT has no decoding state; profile its training step")
    if args.compile and not args.device.startswith("cuda"):
        parser.error("--compile: profiles compiled steps' GPU kernels, on cuda only "
                     "(the CPU run counts eager operators)")
    if args.decode is not None and args.compile and not args.decoder:
        parser.error("--compile with --decode: compiles the Decoder's step; give --decoder too")
    if args.decoder and args.decode is None:
        parser.error("--decoder: profiles decoding steps; give --decode CONTEXT too")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("profile_step.py: no CUDA device found (profile on the CPU with --device cpu)")
    args.steps = args.steps or (64 if args.decode is not None else 3)

    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.preset, arch="transformer" if args.arch == "gpt" else args.arch,
                             vocab_size=10000, n_seq=args.length, dropout=0.0)
    with torch.device(args.device):
        if args.arch == "gpt":
            from benchmarks.plain_gpt import PlainGPT
            model = PlainGPT(cfg, max_length=args.length).to(args.device)
        else:
            model = build_model(cfg).to(args.device)
    if args.decode is not None:
        return profile_decoding(model.eval(), cfg, args)
    return profile_training(model, cfg, args.batch, args.length, args.steps, args.compile, args.top, args.device)


if __name__ == "__main__":
    main()
