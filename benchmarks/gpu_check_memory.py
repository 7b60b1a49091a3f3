"""GPU check of the dissipative-memory Triton kernels: ceilings, accuracy at full shapes, timings.

    PYTHONPATH=src python benchmarks/gpu_check_memory.py [--quick] [--out OUT.json]

1. Ceilings (METHOD.md): device-to-device copy bandwidth (bytes read + written) and the bf16 and
   tf32 rates of an 8192³ matrix product, measured here; the floors of every timed shape use them.
2. Accuracy. Fresh model-like inputs (q, k, v as strided views of one qkv projection, keys
   L2-normalised, Γ in [0.01, 0.1], η = 0.1, default consolidation, chunk 64, d 64), forward and the
   gradients of q, k, v, Γ and the incoming S for a loss on o and on the new S (also at d = 32 and 16
   with chunks 32 and 16, ragged, mid-chunk start, passed-in state), against autograd of the
   PyTorch reference in float64 (ground truth) and in float32 (what PyTorch gets in the same
   precision). Decisions taken at a threshold can differ by rounding; heads whose decisions differ
   anywhere are counted and left out of the numeric comparison. One case runs the power iteration
   cold (fixed start, 8 steps: the configuration before the warm start), two run without
   consolidation (``--no-consolidation``: no decisions, the chains split over rows of S). The state's
   power-iteration vector is judged apart (``vector``): where the top singular values are nearly
   equal it is ill-conditioned (fp32 PyTorch: ~1e-5 on noise-like memories) while σ is not.
   Outputs are poisoned (NaN left in the allocator's memory) before the kernels run; every element
   must come back finite. Two runs on the same inputs must agree bit for bit (no race).
3. Timings (triton.testing.do_bench, median) at (B, H, T) = (4, 8, 8192), (1, 8, 32768),
   (32, 8, 1024), d 64, chunk 64: the forward and backward kernels (default warm power iteration;
   cold 8 steps as before; no power iteration; no consolidation, by rows of S a program (64, 32,
   16, 8); without --quick also a few warp counts), the public op (forward, forward+backward) in the model's dtypes
   (q, v bf16, k fp32), bf16 and fp32, warm and cold 8, and without consolidation, the PyTorch
   reference (T ≤ 8192), and flash-linear-attention's chunk_simple_gla forward if `fla` imports
   (the same recurrence as the memory without consolidation).
The table printed last is the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.provenance import run_record  # noqa: E402

D, CHUNK, ETA = 64, 64, 0.1
SHAPES = [(4, 8, 8192), (1, 8, 32768), (32, 8, 1024)]
REFERENCE_MAX_T = 8192  # the PyTorch reference is timed up to this length (~0.3 s a call at B4 T8192)
# Every dot runs in tf32x3 (fp32-level): the state path because decisions are taken on it, o and
# the token gradients because single tf32 products corrupted a deep model's gradients.
STATE_PATH = ("S", "energy_start", "log_decay", "stat_snr", "stat_resonance_energy", "stat_energy",
              "stat_effective_gamma", "dS0")
OUTPUTS = ("o", "dq", "dk", "dv", "dgamma")
TOL_STATE, TOL_OUT, TOL_VECTOR = 1e-5, 1e-5, 1e-3
BF16_GRADS, TOL_BF16 = ("dq", "dv"), 2**-8  # gradients of bf16 inputs carry bf16's rounding
# The accuracy cases (also tests/gpu/test_memory_kernels_full_size.py): (B, H, T, pos, state prefix, d,
# chunk, q and v in bf16 as in the model, consolidation: see config())
ACCURACY_CASES = [(32, 8, 1024, 0, 0, D, CHUNK, False, "warm"), (4, 8, 8192, 0, 0, D, CHUNK, False, "warm"),
                  (8, 8, 1000, 37, 100, D, CHUNK, False, "warm"), (4, 4, 300, 5, 40, 32, 32, False, "warm"),
                  (4, 4, 300, 5, 40, 16, 16, False, "warm"), (8, 8, 1000, 37, 100, D, CHUNK, True, "warm"),
                  (8, 8, 1000, 37, 100, D, CHUNK, False, "cold"), (1, 8, 8192, 37, 100, D, CHUNK, True, "off"),
                  (4, 4, 300, 5, 40, 16, 16, False, "off")]


def bench(f, grad_to_none=None, rep=200):
    from triton.testing import do_bench

    return do_bench(f, warmup=25, rep=rep, grad_to_none=grad_to_none, return_mode="median")


# ----------------------------------------------------------------------------------------------
# Ceilings
# ----------------------------------------------------------------------------------------------


def ceilings():
    n = 1 << 28  # 1 GiB of fp32
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src))
    bandwidth = 2 * n * 4 / (t * 1e-3)
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    bf16 = 2 * 8192**3 / (bench(lambda: a @ b) * 1e-3)
    a, b = a.float(), b.float()
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32 = 2 * 8192**3 / (bench(lambda: a @ b) * 1e-3)
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"bandwidth_Bps": bandwidth, "bf16_flops": bf16, "tf32_flops": tf32}


def floors(B, H, T, in_bytes, ceil):
    """Fewest bytes and the flops of the forward and backward (tf32x3: 3 tf32 products per dot)."""
    N, NT = B * H * T * D, B * H * math.ceil(T / CHUNK)
    state = NT * D * D * 4  # S at every chunk start (written by the forward, read by the backward)
    dot = 2 * CHUNK * D * D  # one C×d×d (= C×C×d at C = d) product
    fwd_bytes = 3 * N * in_bytes + B * H * T * 4 + N * 4 + state
    bwd_bytes = 3 * N * in_bytes + B * H * T * 4 + N * 4 + state + 3 * N * in_bytes + B * H * T * 4
    fwd_flops = NT * (4 * dot + 2 * 2 * D**3)  # qkᵀ, A v, q S, kᵀv; consolidation QᵀS, Q(…)
    bwd_flops = NT * (9 * dot + 2 * 2 * D**3)  # 8 gradient products, qᵀdO; projection of dS
    out = {}
    for name, by, fl in (("fwd", fwd_bytes, fwd_flops), ("bwd", bwd_bytes, bwd_flops)):
        out[name] = {"bytes": by, "flops": fl, "t_bytes_ms": by / ceil["bandwidth_Bps"] * 1e3,
                     "t_flops_ms": 3 * fl / ceil["tf32_flops"] * 1e3}
    return out


# ----------------------------------------------------------------------------------------------
# Inputs and accuracy
# ----------------------------------------------------------------------------------------------


def make_inputs(B, H, T, dtype, seed, d=D):
    """q, k, v laid out as the memory layer passes them (views of one projection), Γ as a (B,H,T)
    view of (B,T,H); keys normalised in fp32 as the layer does."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(B, T, 3, H, d, device="cuda", generator=g).to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    k = F.normalize(k.float(), dim=-1).to(dtype)
    gamma = (0.01 + 0.09 * torch.rand(B, T, H, device="cuda", generator=g)).transpose(1, 2)
    return q, k, v, gamma


def config(chunk=CHUNK, consolidation="warm"):
    """The default consolidation ("warm": warm-started power iteration), the cold 8 steps it replaced
    ("cold"), or none ("off", ``--no-consolidation``)."""
    from breath.ops.consolidation import ConsolidationConfig

    return {"warm": ConsolidationConfig(chunk=chunk),
            "cold": ConsolidationConfig(chunk=chunk, power_iterations=8, power_warm_start=False),
            "off": ConsolidationConfig(chunk=chunk, enabled=False)}[consolidation]


def basis(d=D):
    from breath.layers.zeta import zeta_basis

    return zeta_basis(d).to("cuda", torch.float32)


def run_op(fn, q, k, v, gamma, Q, cfg, pos, state, w_o, w_S, **kw):
    """Forward, then backward of ⟨o, w_o⟩ + ⟨S_new, w_S⟩: (o, state, stats, [dq, dk, dv, dΓ, dS0])."""
    xs = [x.detach().clone().requires_grad_() for x in (q, k, v, gamma, state.S)]
    o, new, stats = fn(*xs[:4], ETA, Q, cfg, pos=pos, state=state._replace(S=xs[4]), **kw)
    torch.autograd.backward([o, new.S], [w_o.to(o.dtype), w_S.to(o.dtype)])
    return o.detach(), [x.detach() for x in new], stats, [x.grad for x in xs]


def poison_allocator():
    """Leave NaN in the caching allocator's free blocks, so that torch.empty hands out NaN."""
    free, _ = torch.cuda.mem_get_info()
    blob = torch.full((int(free * 0.5) // 4,), float("nan"), device="cuda")
    del blob


def accuracy(B, H, T, pos, prefix, seed, d=D, chunk=CHUNK, model_dtypes=False, consolidation="warm"):
    """model_dtypes: q and v in bf16, k in fp32, as the memory layer passes them under autocast (the
    float64 reference gets the same bf16-rounded values; dq and dv come back in bf16). consolidation:
    as in config()."""
    from breath.ops.dissipative_memory import MemoryState, dissipative_memory
    from breath.ops.dissipative_memory_triton import dissipative_memory_triton

    cfg = config(chunk, consolidation)
    Q = basis(d)
    q, k, v, gamma = make_inputs(B, H, T, torch.float32, seed, d)
    if model_dtypes:
        q, v = q.bfloat16(), v.bfloat16()
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    w_o = torch.randn(B, H, T, d, device="cuda", generator=g, dtype=torch.float64)
    w_S = torch.randn(B, H, d, d, device="cuda", generator=g, dtype=torch.float64)
    state = None
    if prefix:
        pq, pk, pv, pg = make_inputs(B, H, prefix, torch.float32, seed + 2, d)
        # "off": a prefix with the consolidation, whose pending adjustments then persist through every chunk
        prefix_cfg = config(chunk) if consolidation == "off" else cfg
        state = dissipative_memory(pq, pk, pv, pg, ETA, Q, prefix_cfg, use_triton="off")[1]
    state32 = state if state is not None else MemoryState.zeros(B, H, d, torch.float32, "cuda")
    state64 = type(state32)(*(x.double() for x in state32))

    # use_triton="off": on CUDA the op's default ("auto") would run the kernels under test
    ref64 = run_op(dissipative_memory, *(x.double() for x in (q, k, v, gamma)), Q.double(), cfg, pos, state64,
                   w_o, w_S, use_triton="off")
    ref32 = run_op(dissipative_memory, *(x.float() for x in (q, k, v, gamma)), Q, cfg, pos, state32, w_o, w_S,
                   use_triton="off")
    poison_allocator()
    tri = run_op(dissipative_memory_triton, q, k, v, gamma, Q, cfg, pos, state32, w_o, w_S)
    again = run_op(dissipative_memory_triton, q, k, v, gamma, Q, cfg, pos, state32, w_o, w_S)
    flat, flat_again = [tri[0], *tri[1], *tri[3]], [again[0], *again[1], *again[3]]
    finite = all(bool(torch.isfinite(x).all()) for x in flat)
    repeat = all(torch.equal(a, b) for a, b in zip(flat, flat_again))
    return {"triton": compare(tri, ref64) | {"finite": finite, "bitwise_repeat": repeat, "bf16_grads": model_dtypes},
            "pytorch_fp32": compare(ref32, ref64)}


def compare(got, ref):
    """Relative errors ‖x − ref‖/‖ref‖ over the heads whose decisions agree with ref's everywhere."""
    o, state, stats, grads = got
    o_r, state_r, stats_r, grads_r = ref
    differ = torch.zeros(o.shape[:2], dtype=torch.bool, device="cuda")
    assert stats.keys() == stats_r.keys()
    for name in ("low_snr", "stable", "resonant_modes"):
        if name in stats:  # none without consolidation
            differ |= (stats[name] != stats_r[name]).any(-1)
    for a, b in zip(state[1:4], state_r[1:4]):  # pending adjustments after the last boundary
        differ |= (a.double() - b.double()).abs() > 1e-6
    same = ~differ

    def err(x, y):
        x, y = x[same].double(), y[same].double()
        return ((x - y).norm() / y.norm().clamp_min(1e-300)).item()

    out = {"heads_with_other_decisions": int(differ.sum()), "heads": differ.numel(), "o": err(o, o_r)}
    for name, x, y in zip(("S", "energy_start", "log_decay", "vector"), (state[0], state[4], state[5], state[6]),
                          (state_r[0], state_r[4], state_r[5], state_r[6])):
        out[name] = err(x, y)
    for name in ("snr", "resonance_energy", "energy", "effective_gamma"):
        if name in stats:  # none without consolidation
            out["stat_" + name] = err(stats[name], stats_r[name])
    for name, x, y in zip(("dq", "dk", "dv", "dgamma", "dS0"), grads, grads_r):
        out[name] = err(x, y)
    return out


# ----------------------------------------------------------------------------------------------
# Timings
# ----------------------------------------------------------------------------------------------


def timings(B, H, T, quick, reference):
    from breath.ops.consolidation import ConsolidationConfig
    from breath.ops.dissipative_memory import MemoryState, dissipative_memory
    from breath.ops.dissipative_memory_triton import (LaunchSettings, backward_launch, dissipative_memory_triton,
                                                      forward_launch)

    cfg, cold, off = config(), config(consolidation="cold"), config(consolidation="off")
    Q = basis()
    res = {}
    for tag in ("model", "bf16", "fp32"):  # model: q, v bf16 and k fp32, as the memory layer passes them
        q, k, v, gamma = make_inputs(B, H, T, torch.float32 if tag == "fp32" else torch.bfloat16, seed=11)
        if tag == "model":
            k = F.normalize(k.float(), dim=-1)
        S0 = torch.zeros(B, H, D, D, device="cuda")
        scal0 = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], device="cuda").expand(B, H, 5).contiguous()
        x0 = MemoryState.zeros(B, H, D, device="cuda").vector
        do = torch.randn(B, H, T, D, device="cuda")
        dS = torch.randn(B, H, D, D, device="cuda")
        variants = [LaunchSettings()]  # the default first
        if tag == "model" and not quick:
            variants += [LaunchSettings(grad_warps=8), LaunchSettings(out_warps=8, grad_warps=8),
                         LaunchSettings(state_warps=8)]
        for launch in variants:
            s_start, mult, keep = forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, cfg, launch)[7:]
            name = f"w{launch.state_warps}{launch.out_warps}{launch.grad_warps}"
            res[f"kernel_fwd_{name}_{tag}"] = bench(
                lambda: forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, cfg, launch))
            res[f"kernel_bwd_{name}_{tag}"] = bench(
                lambda: backward_launch(do, dS, q, k, v, gamma, Q, s_start, mult, keep, ETA, 0, CHUNK, True, launch))
        if tag == "model":
            # Without consolidation (--no-consolidation): the chains split over rows of S.
            for rows in (D, 32, 16, 8):
                launch = LaunchSettings(state_rows=rows)
                s_start, mult, keep = forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, off, launch)[7:]
                res[f"kernel_fwd_noconsolidation_rows{rows}_model"] = bench(
                    lambda: forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, off, launch))
                res[f"kernel_bwd_noconsolidation_rows{rows}_model"] = bench(
                    lambda: backward_launch(do, dS, q, k, v, gamma, Q, s_start, mult, keep, ETA, 0, CHUNK, False,
                                            launch))
            no_pi = ConsolidationConfig(chunk=CHUNK, power_iterations=0)
            res["kernel_fwd_cold8_model"] = bench(lambda: forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, cold))
            res["kernel_fwd_no_power_iteration_model"] = bench(
                lambda: forward_launch(q, k, v, gamma, Q, S0, scal0, x0, ETA, 0, no_pi))

        xs = [x.detach().clone().requires_grad_() for x in (q, k, v, gamma)]
        w_o = torch.randn(B, H, T, D, device="cuda")

        def op_fwd(fn, cfg=cfg, **kw):
            with torch.no_grad():
                fn(*xs, ETA, Q, cfg, **kw)

        def op_fwd_bwd(fn, cfg=cfg, **kw):
            o, _, _ = fn(*xs, ETA, Q, cfg, **kw)
            o.backward(w_o)

        res[f"op_fwd_{tag}"] = bench(lambda: op_fwd(dissipative_memory_triton))
        res[f"op_fwdbwd_{tag}"] = bench(lambda: op_fwd_bwd(dissipative_memory_triton), grad_to_none=xs)
        if tag == "model":
            res["op_fwd_noconsolidation_model"] = bench(lambda: op_fwd(dissipative_memory_triton, off))
            res["op_fwdbwd_noconsolidation_model"] = bench(lambda: op_fwd_bwd(dissipative_memory_triton, off),
                                                           grad_to_none=xs)
            res["op_fwd_cold8_model"] = bench(lambda: op_fwd(dissipative_memory_triton, cold))
            res["op_fwdbwd_cold8_model"] = bench(lambda: op_fwd_bwd(dissipative_memory_triton, cold), grad_to_none=xs)
        if tag == "fp32" and reference and T <= REFERENCE_MAX_T:
            res["reference_fwd_fp32"] = bench(lambda: op_fwd(dissipative_memory, use_triton="off"), rep=100)
            res["reference_fwdbwd_fp32"] = bench(lambda: op_fwd_bwd(dissipative_memory, use_triton="off"),
                                                 grad_to_none=xs, rep=100)
        print(f"  timed B={B} H={H} T={T} {tag}", flush=True)
    res["fla_chunk_simple_gla_fwd_bf16"] = fla_forward(B, H, T)
    return res


def fla_forward(B, H, T):
    """chunk_simple_gla forward (same recurrence, no consolidation) when fla imports; else None."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as exc:  # not installed on the device image
        print(f"  fla not importable ({type(exc).__name__}): chunk_simple_gla not timed", flush=True)
        return None
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = -(0.01 + 0.09 * torch.rand(B, T, H, device="cuda"))
    with torch.no_grad():
        return bench(lambda: chunk_simple_gla(q, k, v, g=g, scale=1.0))


def compile_check():
    """torch.compile(fullgraph=True, inductor) of a function that calls the op: values and grads."""
    from breath.ops.consolidation import ConsolidationConfig
    from breath.ops.dissipative_memory_triton import dissipative_memory_triton

    cfg, Q = ConsolidationConfig(chunk=CHUNK), basis()
    q, k, v, gamma = make_inputs(2, 4, 300, torch.bfloat16, seed=5)

    def f(q, k, v, gamma):
        o, state, stats = dissipative_memory_triton(q * 1.5, k, v, gamma, ETA, Q, cfg, pos=7)
        return o.square().mean() + state.S.square().mean() + stats["snr"].mean()

    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        x = q.detach().clone().requires_grad_()
        loss = fn(x, k, v, gamma)
        loss.backward()
        results.append((loss.detach(), x.grad))
    (l_e, g_e), (l_c, g_c) = results
    return {"loss_rel": ((l_c - l_e).abs() / l_e.abs()).item(),
            "grad_rel": ((g_c.float() - g_e.float()).norm() / g_e.float().norm()).item()}


def resource_report():
    """Registers, spills and shared memory of every compiled kernel variant (the compiler's report)."""
    import breath.ops.dissipative_memory_triton as K

    lines = []
    for name in ("_fwd_update_kernel", "_fwd_state_kernel", "_fwd_out_kernel", "_bwd_state_kernel", "_bwd_query_kernel", "_bwd_key_kernel"):
        try:
            for cache in getattr(K, name).device_caches.values():
                for ck in cache[0].values():
                    names = ck.src.fn.arg_names
                    consts = {names[k[0]]: v for k, v in ck.src.constants.items()
                              if isinstance(k, tuple) and len(k) == 1 and names[k[0]].isupper()}
                    consts["q"] = ck.src.signature.get("q_ptr")
                    lines.append(f"  {name} warps={ck.metadata.num_warps} regs={ck.n_regs} spills={ck.n_spills} "
                                 f"shared={ck.metadata.shared} {consts}")
        except Exception as exc:  # the cache layout is Triton-version specific
            lines.append(f"  {name}: no report ({type(exc).__name__}: {exc})")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="skip the per-variant kernel sweep")
    p.add_argument("--no-reference", action="store_true", help="do not time the PyTorch reference")
    p.add_argument("--out", "--json", dest="out", default=None, help="write every number to this JSON file")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check_memory: needs a CUDA GPU")
    import triton

    info = {**run_record(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__}
    print(info, flush=True)
    ceil = ceilings()
    print({k: f"{v:.3g}" for k, v in ceil.items()}, flush=True)

    acc = {}
    for B, H, T, pos, prefix, d, chunk, model_dtypes, consolidation in ACCURACY_CASES:
        key = (B, H, T, pos, d, chunk, "q,v bf16" if model_dtypes else "fp32", consolidation)
        acc[key] = accuracy(B, H, T, pos, prefix, B + T + pos, d, chunk, model_dtypes, consolidation)
        print(f"accuracy B={B} H={H} T={T} pos={pos} state={'yes' if prefix else 'no'} d={d} chunk={chunk} "
              f"{key[6]} {key[7]}:", flush=True)
        for name, row in acc[key].items():
            print(f"  {name:13s} " + " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in row.items()), flush=True)
    comp = compile_check()
    print(f"torch.compile(fullgraph=True) vs eager: {comp}", flush=True)

    times = {}
    for B, H, T in SHAPES:
        times[(B, H, T)] = timings(B, H, T, args.quick, not args.no_reference)
        for k, v in times[(B, H, T)].items():
            print(f"  {k:45s} {'-' if v is None else f'{v:8.4f} ms'}", flush=True)

    print("compiled kernels:", *resource_report(), sep="\n", flush=True)
    kernel_rows = [row for rows in acc.values() for name, row in rows.items() if name != "pytorch_fp32"]
    worst_state = max(row[k] for row in kernel_rows for k in STATE_PATH if k in row)  # no stats: no consolidation
    # dq and dv of bf16 q and v come back in bf16: judged against bf16's rounding, not TOL_OUT
    worst_out = max(row[k] for row in kernel_rows for k in OUTPUTS if not (row["bf16_grads"] and k in BF16_GRADS))
    worst_bf16 = max(row[k] for row in kernel_rows if row["bf16_grads"] for k in BF16_GRADS)
    worst_vector = max(row["vector"] for row in kernel_rows)
    print(f"dq, dv returned in bf16 (q, v bf16): worst rel err {worst_bf16:.1e} (tol {TOL_BF16:g})")
    print(f"state's power-iteration vector: worst rel err {worst_vector:.1e} (tol {TOL_VECTOR:g})")
    ok = worst_state < TOL_STATE and worst_out < TOL_OUT and worst_bf16 < TOL_BF16 and worst_vector < TOL_VECTOR
    ok &= all(row["finite"] and row["bitwise_repeat"] for row in kernel_rows)
    ok &= comp["loss_rel"] < 1e-4 and comp["grad_rel"] < 1e-3
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"info": info, "ceilings": ceil, "accuracy": {str(k): v for k, v in acc.items()},
                       "compile": comp, "timings_ms": {str(k): v for k, v in times.items()}}, fh, indent=1)

    print()
    print(f"{info['device']} torch {info['torch']} triton {info['triton']} {info['date']}")
    print(f"ceilings: copy {ceil['bandwidth_Bps'] / 1e12:.2f} TB/s, bf16 {ceil['bf16_flops'] / 1e12:.0f} TFLOP/s, "
          f"tf32 {ceil['tf32_flops'] / 1e12:.0f} TFLOP/s")
    print(f"accuracy vs float64 reference, worst rel err of the kernels: state path {worst_state:.1e} "
          f"(tol {TOL_STATE:g}), o and token grads {worst_out:.1e} (tol {TOL_OUT:g}) -> {'PASS' if ok else 'FAIL'}")
    print(f"{'shape':>14s} {'dt':>5s} | {'fwd':>7s} {'fwd+bwd':>7s} | {'cold8 f':>7s} {'cold8fb':>7s} | "
          f"{'nocons f':>7s} {'nocons fb':>7s} | {'ref fwd':>7s} {'ref f+b':>7s} | {'floor f':>7s} "
          f"{'floor b':>7s} | {'fla fwd':>7s}")
    for (B, H, T), r in times.items():
        for tag, nbytes in (("model", 2), ("bf16", 2), ("fp32", 4)):
            fl = floors(B, H, T, nbytes, ceil)
            fla = r["fla_chunk_simple_gla_fwd_bf16"]
            cells = [r[f"op_fwd_{tag}"], r[f"op_fwdbwd_{tag}"]]
            cells += [r.get(f"op_{kind}_cold8_{tag}", float("nan")) for kind in ("fwd", "fwdbwd")]
            cells += [r.get(f"op_{kind}_noconsolidation_{tag}", float("nan")) for kind in ("fwd", "fwdbwd")]
            cells += [r.get(f"reference_{kind}_{tag}", float("nan")) for kind in ("fwd", "fwdbwd")]
            cells += [max(fl[kind]["t_bytes_ms"], fl[kind]["t_flops_ms"]) for kind in ("fwd", "bwd")]
            print(f"B{B:<2d}H{H}T{T:<5d} {tag:>5s} | " + " | ".join(
                " ".join(f"{c:7.3f}" for c in cells[i:i + 2]) for i in (0, 2, 4, 6, 8))
                + f" | {'-' if fla is None or tag == 'fp32' else f'{fla:7.3f}'}")
    print("kernels alone, q/v bf16 + k fp32 (ms): warps w<state><out><grad>")
    for (B, H, T), r in times.items():
        print(f"B{B:<2d}H{H}T{T:<5d} " + "  ".join(f"{k.removeprefix('kernel_').removesuffix('_model')} {v:.3f}"
                                                    for k, v in r.items() if k.startswith("kernel_") and "model" in k))
    print("(ms, medians; fwd, fwd+bwd = public dissipative_memory_triton with the default warm-started power "
          "iteration; cold8 = the same with 8 cold steps, as before; nocons = without consolidation; ref = PyTorch reference on the fp32 inputs, "
          f"T <= {REFERENCE_MAX_T}; floor = max(bytes/bandwidth, 3·flops/tf32 rate))")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
