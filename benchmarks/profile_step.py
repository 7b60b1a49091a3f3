"""Where a training step's GPU time goes: the top CUDA kernels of one step, by self time.

    PYTHONPATH=src python benchmarks/profile_step.py --arch phase2 --preset base --batch 32 --length 1024

Runs a few warm-up steps (forward + backward + AdamW, bf16 autocast, like ``throughput.py``), then
profiles ``--steps`` steps with ``torch.profiler`` and prints each kernel's share of the GPU time.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from breath import ModelConfig, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="phase2", choices=("phase2", "phase1", "transformer"))
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.preset, arch=args.arch, vocab_size=10000, n_seq=args.length, dropout=0.0)
    with torch.device("cuda"):
        model = build_model(cfg).cuda()
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.length + 1), device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            logits = step_model(ids[:, :-1]).logits
        F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels)
    print(f"\n{args.arch} {args.preset} B{args.batch} T{args.length} {'compiled' if args.compile else 'eager'}: "
          f"{total / args.steps / 1e3:.2f} ms of GPU time per step, {len(kernels)} distinct kernels")
    print(f"{'share':>6}  {'ms/step':>8}  {'calls/step':>10}  kernel")
    for e in sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:args.top]:
        print(f"{e.self_device_time_total / total:6.1%}  {e.self_device_time_total / args.steps / 1e3:8.3f}  "
              f"{e.count / args.steps:10.0f}  {e.key[:110]}")


if __name__ == "__main__":
    main()
