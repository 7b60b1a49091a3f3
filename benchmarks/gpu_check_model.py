"""Whole-model checks on a GPU: the Triton path computes the reference path's function.

For each arch with custom ops (phase2, phase1), at the base preset on fresh random tokens:
  * logits and every parameter gradient, Triton vs PyTorch reference (float32): relative error;
  * recurrent = parallel with the kernels: the sequence fed in ragged pieces with the state;
  * torch.compile of the Triton model gives the eager logits.
Prints a table; exits non-zero if a check fails.

    PYTHONPATH=src python benchmarks/gpu_check_model.py
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from breath import ModelConfig, build_model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(ids[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def worst(grads: dict, reference: dict, count: int = 3) -> str:
    errors = sorted(((rel(grads[n], reference[n]), n) for n in reference), reverse=True)[:count]
    return ", ".join(f"{n} {e:.1e}" for e, n in errors)


def check(arch: str, batch: int = 4, length: int = 1000, **overrides) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("base", arch=arch, vocab_size=10000, dropout=0.0, **overrides)
    label = arch + "".join(f" {k}={v}" for k, v in overrides.items())
    with torch.device("cuda"):
        fast = build_model(ModelConfig(**{**cfg.to_dict(), "use_triton": "on"})).cuda()
        slow = build_model(ModelConfig(**{**cfg.to_dict(), "use_triton": "off"})).cuda()
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 10000, (batch, length + 1), device="cuda")
    logits_fast, grads_fast = loss_and_grads(fast, ids)
    logits_slow, grads_slow = loss_and_grads(slow, ids)
    print(f"{label}: worst gradients: {worst(grads_fast, grads_slow)}")
    # A scalar parameter's gradient (pe_gain) sums ~10⁶ signed terms: its relative error is that of
    # a cancelling sum, so it is shown above but not held to the tensors' tolerance.
    tensors = [n for n, g in grads_slow.items() if g.numel() > 1]
    rows = [(f"{label}: logits triton vs reference", rel(logits_fast, logits_slow), 1e-4),
            (f"{label}: worst tensor-parameter gradient", max(rel(grads_fast[n], grads_slow[n]) for n in tensors), 2e-3)]
    if overrides:
        return rows
    with torch.no_grad():
        state, pieces, start = None, [], 0
        for size in (37, 1, 200, 64, 698):
            out = fast(ids[:, start : start + size], state=state)
            pieces.append(out.logits)
            state, start = out.state, start + size
        rows.append((f"{label}: recurrent vs parallel (triton)", rel(torch.cat(pieces, 1), logits_fast), 1e-4))
        compiled = torch.compile(fast)
        rows.append((f"{label}: compiled vs eager", rel(compiled(ids[:, :-1]).logits, logits_fast), 1e-4))
    return rows


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__)
    rows = [*check("phase2"), *check("phase1")]
    width = max(len(name) for name, _, _ in rows)
    failed = False
    for name, error, tolerance in rows:
        ok = error <= tolerance
        failed |= not ok
        print(f"{name:{width}s}  rel err {error:.2e}  (tol {tolerance:.0e})  {'ok' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
