"""Where a training step's activation memory goes: bytes saved for backward, by module.

    python benchmarks/saved_activations.py --arch phase2 --preset base --batch 4 --length 1024
    python benchmarks/saved_activations.py --arch gpt ...     # plain_gpt.py's PlainGPT, the peer

One forward + loss under bf16 autocast (CPU autocast here, so the dtypes match a GPU run: LayerNorm
outputs fp32, matmuls bf16) with ``torch.autograd.graph.saved_tensors_hooks`` recording every tensor
autograd keeps for the backward, once per storage, attributed to the innermost module running when
it was saved (layer indices folded: ``blocks.memory.conv`` sums all layers). With ``--kernels`` the
Triton kernels run in Triton's CPU interpreter, so the accounting is that of the kernel path the GPU
runs (phase2 base at B4 T1024 takes ~6 minutes on 2 CPU cores); without it, the PyTorch reference
path, which saves different (and more) tensors. Needs no GPU; ``--device cuda`` runs the same
accounting there (kernels native), where fused PyTorch ops may save less than their CPU versions
(``F.rms_norm`` on CPU keeps its normalised input too). Saved tensors are most of a step's
peak above the weights, gradients and optimizer state, not all of it (temporaries of the backward).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys


def saved_bytes(model, ids, autocast_dtype=None, logits_of=None) -> dict[str, list[tuple[int, tuple, str]]]:
    """Module name (layer indices folded) → [(bytes, shape, dtype)] of the storages saved for backward
    by one forward of ``ids[:, :-1]`` and its next-token cross-entropy. ``logits_of(ids)`` gives the
    logits (default ``model(ids).logits``; ``PlainGPT`` returns them directly)."""
    import torch

    stack, seen = [""], {}

    def enter(name):
        return lambda module, inputs: stack.append(name)  # returns None: the inputs stay as they are

    def leave(module, inputs, output) -> None:  # returns None: the output stays as it is
        stack.pop()

    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]

    def pack(t):
        storage = t.untyped_storage()
        seen.setdefault(storage.data_ptr(), (stack[-1], storage.nbytes(), tuple(t.shape), str(t.dtype)))
        return t

    autocast = torch.autocast(ids.device.type, autocast_dtype, enabled=autocast_dtype is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        logits = (logits_of or (lambda x: model(x).logits))(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    for hook in hooks:
        hook.remove()
    grouped = collections.defaultdict(list)
    for name, nbytes, shape, dtype in seen.values():
        folded = ".".join(part for part in name.split(".") if not part.isdigit()) or "(loss, outside modules)"
        grouped[folded].append((nbytes, shape, dtype.replace("torch.", "")))
    return dict(grouped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="phase2", choices=("phase2", "phase1", "transformer", "gpt"),
                        help="gpt: plain_gpt.py's PlainGPT at the preset's sizes")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--kernels", action="store_true",
                        help="run the Triton kernels in the CPU interpreter (the GPU's saved tensors; slow)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the same accounting on the GPU (its kernels and fused PyTorch ops, fast)")
    parser.add_argument("--output", help="also write the totals by module as JSON (date, device, command, commit)")
    args = parser.parse_args()
    if args.kernels and args.device == "cuda":
        parser.error("--kernels runs Triton's CPU interpreter; on --device cuda the kernels run natively")
    if args.kernels:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported
    import torch

    from breath import ModelConfig, build_model

    torch.manual_seed(0)
    kernels = (args.kernels or args.device == "cuda") and args.arch not in ("transformer", "gpt")
    cfg = ModelConfig.preset(args.preset, arch="transformer" if args.arch == "gpt" else args.arch,
                             vocab_size=args.vocab_size, n_seq=args.length, dropout=0.0,
                             use_triton="on" if kernels else "auto")
    if args.arch == "gpt":
        from plain_gpt import PlainGPT  # benchmarks/ is on sys.path when this script runs

        model = PlainGPT(cfg, max_length=args.length)
    else:
        model = build_model(cfg)
    model.to(args.device)
    ids = torch.randint(0, args.vocab_size, (args.batch, args.length + 1)).to(args.device)
    grouped = saved_bytes(model, ids, torch.bfloat16, logits_of=model if args.arch == "gpt" else None)
    total = sum(n for rows in grouped.values() for n, _, _ in rows)
    print(f"{args.arch} {args.preset} B{args.batch} T{args.length} ({'kernels' if kernels else 'reference'} path, "
          f"{args.device}): {total / 1e6:.1f} MB saved for backward")
    for name, rows in sorted(grouped.items(), key=lambda item: -sum(n for n, _, _ in item[1])):
        largest = max(rows)
        print(f"  {name:28s} {sum(n for n, _, _ in rows) / 1e6:8.1f} MB  {len(rows):3d} tensors, "
              f"largest {largest[1]} {largest[2]}")
    if args.output:
        import datetime
        import json

        from provenance import git_commit  # benchmarks/ is on sys.path when this script runs

        record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "device": args.device, "torch": torch.__version__, "command": " ".join(sys.argv),
                  **git_commit(), "arch": args.arch, "preset": args.preset,
                  "batch": args.batch, "length": args.length, "path": "kernels" if kernels else "reference",
                  "total_MB": total / 1e6,
                  "by_module_MB": {name: sum(n for n, _, _ in rows) / 1e6 for name, rows in grouped.items()}}
        with open(args.output, "w") as fh:
            json.dump(record, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
