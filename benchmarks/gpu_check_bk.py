"""GPU check of the causal BK resolvent's Triton kernels: accuracy at full shapes, a sweep of launch
configurations, and the time of Triton vs the PyTorch custom Function.

    python benchmarks/gpu_check_bk.py              # needs a CUDA GPU and triton
    python benchmarks/gpu_check_bk.py --no-sweep   # skip the launch-configuration sweep
    python benchmarks/gpu_check_bk.py --scan --out bk_scan.json   # only the chunked scan vs sequential (< 2 min)

1. Accuracy. Model-like inputs (a = V - iΓ with Γ in [0.01, 0.05], b = c = h = 1, Im z in {1, 0.1}),
   laid out as the model passes them ((B, C, T) view of a (B, T, C) tensor). The Triton path
   (complex64) is compared, forward and gradients of a, h, z and left, with autograd of
   bk_resolvent_reference in complex128: max |error| / max |reference| per tensor, must be < 1e-4.
2. Sweep (optional): forward and forward+backward time of each (UNROLL, STAGES, BLOCK_N, num_warps),
   at the op level and for the bare kernels, with each configuration's error against complex128;
   the module defaults in breath/ops/bk_resolvent_triton.py should be the fastest row.
3. Timing: bk_resolvent(..., use_triton=True) vs use_triton=False (the PyTorch custom Function,
   complex64), forward and forward+backward, triton.testing.do_bench medians, and peak memory.
The table printed last is the summary. Steps 2 and 3 run the kernels as bk_resolvent dispatches them
(the chunked scan where ``scan_chunk`` picks it).

``--scan`` runs only the check of the chunked scan against the sequential kernel, on the bare kernels
(time-major inputs, model-like, Im z = 1 and 0.1, from a state σ) at (chains, T) in SCAN_SHAPES:
(a) accuracy of both against complex128 autograd of bk_resolvent_reference, forward and the
gradients of e, β and σ (max |error| / max |reference|, must be < 1e-4); (b) forward and
forward+backward medians (triton.testing.do_bench) of the sequential kernel (chunk 0), the rule's
chunk and every chunk in SCAN_CHUNKS, so the rule can be re-tuned. Table last; JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.provenance import run_record  # noqa: E402

SHAPES = [(32, 8, 1024), (4, 8, 8192)]
SCAN_SHAPES = [(32, 8192), (8, 32768), (256, 1024)]  # (chains, T): B4 T8192, B1 T32768, a wide short batch
SCAN_CHUNKS = [32, 64, 128, 256, 512]
TOL = 1e-4


def make_inputs(B, C, T, imz, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    rdt = torch.float64
    V = torch.randn(B, T, C, generator=g, dtype=rdt)
    Gam = 0.01 + 0.04 * torch.rand(B, T, C, generator=g, dtype=rdt)
    a = torch.complex(V, -Gam).transpose(1, 2)  # (B, C, T) view, as the model passes it
    h = torch.ones(C, 1, dtype=rdt)
    z = torch.complex(0.3 * torch.randn(C, generator=g, dtype=rdt), torch.full((C,), imz, dtype=rdt))
    left = torch.complex(0.2 * torch.randn(B, C, generator=g, dtype=rdt), 0.1 * torch.rand(B, C, generator=g, dtype=rdt))
    w = torch.randn(B, C, T, generator=g, dtype=torch.complex128)
    rdt_out = torch.float32 if dtype == torch.complex64 else torch.float64
    out = [a.to(dtype), h.to(rdt_out), z.to(dtype), left.to(dtype), w.to(dtype)]
    return [x.to(device) for x in out]


def run(fn, a, h, z, left, w, **kw):
    xs = [x.detach().clone().requires_grad_() for x in (a, h, z, left)]
    out = fn(xs[0], xs[1], xs[1], xs[2], left=xs[3], **kw)
    out.backward(w)
    return [out.detach()] + [x.grad for x in xs]


def rel_err(x, ref):
    return ((x.to(ref.dtype) - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def accuracy(dev):
    from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference

    rows, ok = [], True
    for B, C, T in SHAPES:
        for imz in (1.0, 0.1):
            ref = run(bk_resolvent_reference, *make_inputs(B, C, T, imz, torch.complex128, dev))
            tri = run(bk_resolvent, *make_inputs(B, C, T, imz, torch.complex64, dev), use_triton=True)
            pyt = run(bk_resolvent, *make_inputs(B, C, T, imz, torch.complex64, dev), use_triton=False)
            e_t = [rel_err(x, r) for x, r in zip(tri, ref)]
            e_p = [rel_err(x, r) for x, r in zip(pyt, ref)]
            ok &= max(e_t) < TOL
            rows.append((B, C, T, imz, e_t, e_p))
            print(f"accuracy B={B} C={C} T={T} Im z={imz}: rel err [g, da, dh, dz, dleft] "
                  f"triton {['%.1e' % e for e in e_t]}  pytorch-c64 {['%.1e' % e for e in e_p]}", flush=True)
    return rows, ok


def bench(f, grad_to_none=None):
    from triton.testing import do_bench

    return do_bench(f, warmup=25, rep=200, grad_to_none=grad_to_none, return_mode="median")


def fwd_and_fwdbwd(dev, B, C, T, **kw):
    from breath.ops.bk_resolvent import bk_resolvent

    a, h, z, left, w = make_inputs(B, C, T, 1.0, torch.complex64, dev)
    xs = [x.detach().clone().requires_grad_() for x in (a, h, z, left)]

    def fwd():
        with torch.no_grad():
            bk_resolvent(xs[0], xs[1], xs[1], xs[2], left=xs[3], **kw)

    def fwd_bwd():
        bk_resolvent(xs[0], xs[1], xs[1], xs[2], left=xs[3], **kw).backward(w)

    t_f = bench(fwd)
    t_fb = bench(fwd_bwd, grad_to_none=xs)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return t_f, t_fb, peak


def sweep(dev):
    """Time (and check) each launch configuration, at the op level and for the bare kernels."""
    import breath.ops.bk_resolvent_triton as K
    from breath.ops.bk_resolvent import bk_resolvent

    default = (K.UNROLL, K.STAGES, K.BLOCK_N, K.NUM_WARPS)
    results = {}
    for B, C, T in SHAPES:
        ref = run(bk_resolvent, *make_inputs(B, C, T, 0.1, torch.complex128, dev), use_triton=False)
        N = B * C
        g = torch.Generator(device=dev).manual_seed(0)
        e = torch.complex(torch.randn(T, N, device=dev, generator=g), -0.05 - torch.rand(T, N, device=dev, generator=g))
        beta = torch.ones(T - 1, N, dtype=torch.complex64, device=dev)
        gout = torch.randn(T, N, dtype=torch.complex64, device=dev, generator=g)
        for unroll in (1, 2, 4, 8):
            for stages in (1, 3):
                for block_n, nw in ((32, 1), (64, 2)):
                    K.UNROLL, K.STAGES, K.BLOCK_N, K.NUM_WARPS = unroll, stages, block_n, nw
                    tri = run(bk_resolvent, *make_inputs(B, C, T, 0.1, torch.complex64, dev), use_triton=True)
                    err = max(rel_err(x, r) for x, r in zip(tri, ref))
                    t_f, t_fb, _ = fwd_and_fwdbwd(dev, B, C, T, use_triton=True)
                    # bare kernels on time-major (T, N) tensors: no layout copies, no autograd wrapper ops
                    ee = e.clone().requires_grad_()
                    k_f = bench(lambda: K.bk_causal_triton(ee.detach(), beta))
                    k_fb = bench(lambda: K.bk_causal_triton(ee, beta).backward(gout), grad_to_none=[ee])
                    cfg = (unroll, stages, block_n, nw)
                    results[(B, C, T) + cfg] = (t_f, t_fb, k_f, k_fb, err)
                    print(f"sweep B={B} C={C} T={T} UNROLL={unroll} STAGES={stages} BLOCK_N={block_n:3d} warps={nw}: "
                          f"op fwd {t_f:7.3f} ms fwd+bwd {t_fb:7.3f} ms | kernels fwd {k_f:7.3f} ms fwd+bwd "
                          f"{k_fb:7.3f} ms | rel err {err:.1e}", flush=True)
    K.UNROLL, K.STAGES, K.BLOCK_N, K.NUM_WARPS = default
    return results


def scan_inputs(N, T, imz, dev, seed=0):
    """Time-major complex128 e (T, N), β (T-1, N), σ (N,) and an output weight w (T, N), model-like:
    e = V - iΓ - z with Γ in [0.01, 0.05], β = h² = 1, Im σ >= 0 (a continuation's self-energy)."""
    g = torch.Generator().manual_seed(seed)
    rdt = torch.float64
    V = torch.randn(T, N, generator=g, dtype=rdt) - 0.3 * torch.randn(N, generator=g, dtype=rdt)
    e = torch.complex(V, -(0.01 + 0.04 * torch.rand(T, N, generator=g, dtype=rdt)) - imz)
    beta = torch.ones(T - 1, N, dtype=torch.complex128)
    sigma = torch.complex(0.2 * torch.randn(N, generator=g, dtype=rdt), 0.1 * torch.rand(N, generator=g, dtype=rdt))
    w = torch.randn(T, N, generator=g, dtype=torch.complex128)
    return [x.to(dev) for x in (e, beta, sigma, w)]


def scan_grads(fn, e, beta, sigma, w):
    """[g, de, dβ, dσ] of ``fn(e, beta, sigma)`` for the loss Re Σ g·w."""
    xs = [x.detach().clone().requires_grad_() for x in (e, beta, sigma)]
    out = fn(*xs)
    (out * w.to(out.dtype)).real.sum().backward()
    return [out.detach()] + [x.grad for x in xs]


def scan_reference(e, beta, sigma):
    """The complex128 reference on (T, N) chains along the last dim: b = β, c = 1, z = 0."""
    from breath.ops.bk_resolvent import bk_resolvent_reference

    return bk_resolvent_reference(e.T, beta.T, torch.ones_like(beta.T), 0.0, left=sigma).T


def scan_check(dev):
    """Accuracy and time of the chunked scan against the sequential kernel (see the docstring)."""
    from breath.ops.bk_resolvent_triton import bk_causal_triton, scan_chunk

    rows, ok = [], True
    for N, T in SCAN_SHAPES:
        rule = scan_chunk(T, N)
        row = {"chains": N, "T": T, "rule_chunk": rule, "rel_err": {}, "fwd_ms": {}, "fwd_bwd_ms": {}}
        for imz in (1.0, 0.1):
            e, beta, sigma, w = scan_inputs(N, T, imz, dev)
            ref = scan_grads(scan_reference, e, beta, sigma, w)
            c64 = [x.to(torch.complex64) for x in (e, beta, sigma, w)]
            for chunk in sorted({0, rule}):
                got = scan_grads(lambda *xs: bk_causal_triton(*xs, chunk=chunk), *c64)
                err = max(rel_err(x, r) for x, r in zip(got, ref))
                row["rel_err"][f"chunk {chunk}, Im z {imz}"] = err
                ok &= err < TOL
                print(f"scan accuracy chains={N} T={T} Im z={imz} chunk={chunk}: max rel err [g, de, dbeta, dsigma] "
                      f"{err:.1e}", flush=True)
        e, beta, sigma, w = (x.to(torch.complex64) for x in scan_inputs(N, T, 0.1, dev))
        ee = e.clone().requires_grad_()
        for chunk in sorted({0, rule, *[c for c in SCAN_CHUNKS if c < T]}):
            row["fwd_ms"][chunk] = bench(lambda: bk_causal_triton(e, beta, sigma, chunk=chunk))
            row["fwd_bwd_ms"][chunk] = bench(lambda: bk_causal_triton(ee, beta, sigma, chunk=chunk).backward(w),
                                             grad_to_none=[ee])
            print(f"scan time chains={N} T={T} chunk={chunk}: fwd {row['fwd_ms'][chunk]:.3f} ms, "
                  f"fwd+bwd {row['fwd_bwd_ms'][chunk]:.3f} ms", flush=True)
        rows.append(row)

    print()
    print(f"accuracy vs complex128 reference (max rel err over g and all grads, both kernels): "
          f"{max(max(r['rel_err'].values()) for r in rows):.1e} -> {'PASS' if ok else 'FAIL'} (tol {TOL:g})")
    print(f"{'chains':>6s} {'T':>6s} {'chunk':>5s} | {'seq fwd':>8s} {'fwd+bwd':>8s} | {'scan fwd':>8s} "
          f"{'fwd+bwd':>8s} | {'speed-up f/fb':>13s} | best chunk f/fb")
    for r in rows:
        c, f, fb = r["rule_chunk"], r["fwd_ms"], r["fwd_bwd_ms"]
        print(f"{r['chains']:6d} {r['T']:6d} {c:5d} | {f[0]:6.3f}ms {fb[0]:6.3f}ms | {f[c]:6.3f}ms {fb[c]:6.3f}ms | "
              f"{f[0] / f[c]:5.1f}x {fb[0] / fb[c]:5.1f}x | {min(f, key=f.get)} / {min(fb, key=fb.get)}")
    return {"pass": ok, "tol": TOL, "shapes": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--scan", action="store_true", help="only the chunked scan against the sequential kernel")
    p.add_argument("--out", help="with --scan: write its results as JSON to this path")
    args = p.parse_args()
    if args.out and not args.scan:
        p.error("--out writes the results of --scan: give --scan too")
    if not torch.cuda.is_available():
        sys.exit("gpu_check_bk: needs a CUDA GPU")
    import triton

    dev = "cuda"
    device = f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}"
    print(f"device: {device}", flush=True)
    if args.scan:
        result = scan_check(dev)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": device, **run_record(), **result}, f, indent=1)
        sys.exit(0 if result["pass"] else 1)
    acc_rows, ok = accuracy(dev)
    sweep_res = None if args.no_sweep else sweep(dev)

    timing = []
    for B, C, T in SHAPES:
        tri = fwd_and_fwdbwd(dev, B, C, T, use_triton=True)
        pyt = fwd_and_fwdbwd(dev, B, C, T, use_triton=False)
        timing.append(((B, C, T), tri, pyt))

    print()
    if sweep_res:
        print("fastest launch configuration per shape (UNROLL, STAGES, BLOCK_N, warps), op level:")
        for B, C, T in SHAPES:
            rows = {k[3:]: v for k, v in sweep_res.items() if k[:3] == (B, C, T)}
            best_f = min(rows, key=lambda k: rows[k][0])
            best_fb = min(rows, key=lambda k: rows[k][1])
            print(f"  B={B} C={C} T={T}: fwd {best_f} {rows[best_f][0]:.3f} ms, "
                  f"fwd+bwd {best_fb} {rows[best_fb][1]:.3f} ms")
    print(f"accuracy vs complex128 reference (max rel err over g and all grads): "
          f"{max(max(r[4]) for r in acc_rows):.1e} -> {'PASS' if ok else 'FAIL'} (tol {TOL:g})")
    print()
    print(f"{'B':>3s} {'C':>2s} {'T':>5s} | {'triton fwd':>10s} {'fwd+bwd':>9s} {'peak MiB':>8s} | "
          f"{'pytorch fwd':>11s} {'fwd+bwd':>9s} {'peak MiB':>8s} | {'speed-up f/fb':>13s}")
    for (B, C, T), tri, pyt in timing:
        print(f"{B:3d} {C:2d} {T:5d} | {tri[0]:8.3f}ms {tri[1]:7.3f}ms {tri[2]:8.1f} | "
              f"{pyt[0]:9.3f}ms {pyt[1]:7.3f}ms {pyt[2]:8.1f} | {pyt[0] / tri[0]:5.1f}x {pyt[1] / tri[1]:5.1f}x")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
