"""CPU experiment: how many warm-started power-iteration steps per boundary match 8 cold steps.

Follows the memory (float64 reference, cold 8-step consolidation) through ``--boundaries`` chunk
boundaries on synthetic but language-like inputs, and at every boundary estimates σ_max of the
memory just before consolidation three ways: exactly (SVD), by 8 cold steps from the fixed start
vector (what the kernels did before), and by n warm steps started from the vector the same
estimator ended on at the previous boundary, for each n in ``--steps``. Prints, per scenario and n,
the relative difference to the cold estimate (median, 99th percentile, max), the share of
boundaries where the warm estimate is the better one (closer to the exact σ_max) and the SNR
decisions (snr < / > snr_threshold) that differ from the cold ones.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/power_iteration_warm_start.py
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from breath.layers.zeta import zeta_basis
from breath.ops.consolidation import ConsolidationConfig, memory_snr, start_vector
from breath.ops.dissipative_memory import MemoryState, _consolidate, _segment


def scenario_inputs(name: str, heads: int, T: int, d: int, g: torch.Generator):
    """(k, v, gamma) of shape (1, heads, T, d) / (1, heads, T) for one named scenario."""
    f64 = dict(dtype=torch.float64)
    if name == "iid":  # uncorrelated writes, long memory: noise-like, snr ≈ 1
        k = torch.randn(1, heads, T, d, generator=g, **f64)
        v = torch.randn(1, heads, T, d, generator=g, **f64)
        gamma = torch.full((1, heads, T), 0.01, **f64)
    elif name.startswith("zipf"):  # tokens from a Zipf law, key = token and its predecessor
        vocab = 512
        p = 1.0 / torch.arange(1, vocab + 1, **f64) ** 1.1
        tok = torch.multinomial(p, heads * T, replacement=True, generator=g).view(1, heads, T)
        Ek = torch.randn(vocab, d, generator=g, **f64)
        Ev = torch.randn(vocab, d, generator=g, **f64) + 0.5 * torch.randn(d, generator=g, **f64)
        prev = torch.cat((tok[..., :1], tok[..., :-1]), -1)
        k, v = Ek[tok] + 0.5 * Ek[prev], Ev[tok]
        centre = {"zipf_slow": -4.0, "zipf": -2.0, "zipf_fast": 0.0}[name]
        gamma = 0.01 + F.softplus(centre + torch.randn(1, heads, T, generator=g, **f64))
    elif name == "recall":  # a few key-value pairs written again and again among noise
        pairs = 8
        Ek = torch.randn(heads, pairs, d, generator=g, **f64)
        Ev = torch.randn(heads, pairs, d, generator=g, **f64)
        which = torch.randint(pairs, (heads, T), generator=g)
        noise = torch.rand(heads, T, generator=g) < 0.5
        k = torch.where(noise[..., None], torch.randn(heads, T, d, generator=g, **f64),
                        Ek.gather(1, which[..., None].expand(-1, -1, d)))[None]
        v = torch.where(noise[..., None], torch.randn(heads, T, d, generator=g, **f64),
                        Ev.gather(1, which[..., None].expand(-1, -1, d)))[None]
        gamma = torch.full((1, heads, T), 0.02, **f64)
    else:
        raise ValueError(f"scenario: unknown {name!r}")
    return F.normalize(k, dim=-1), v, gamma


def run(name: str, steps: list[int], heads: int, boundaries: int, d: int, chunk: int, eta: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    k, v, gamma = scenario_inputs(name, heads, boundaries * chunk, d, g)
    cold = ConsolidationConfig(chunk=chunk, power_iterations=8, power_warm_start=False)
    basis = zeta_basis(d).double()
    state = MemoryState.zeros(1, heads, d, torch.float64)
    warm = {n: start_vector(d, torch.float64, "cpu").expand(1, heads, d) for n in steps}
    rel = {n: [] for n in steps}
    names = ["cold 8", *(f"cold {n}" for n in steps if n != 8), *steps]
    err = {n: [] for n in names}  # relative error against the exact σ_max
    flips = {n: 0 for n in names}  # SNR decisions differing from the exact σ_max's

    def decisions(snr):
        return torch.stack((snr < cold.snr_threshold, snr > cold.snr_threshold))
    for i in range(boundaries):
        part = slice(i * chunk, (i + 1) * chunk)
        _, state = _segment(k[:, :, part], k[:, :, part], v[:, :, part], gamma[:, :, part], eta, state)
        S = state.S
        snr_exact = torch.linalg.matrix_norm(S, 2) * (math.sqrt(d) / 2.0) / torch.linalg.matrix_norm(S)
        estimates = {"cold 8": memory_snr(S, 8)[0]}
        for n in steps:
            estimates.setdefault(f"cold {n}", memory_snr(S, n)[0])
        for n in steps:
            estimates[n], warm[n] = memory_snr(S, n, warm[n])
            rel[n].append(((estimates[n] - estimates["cold 8"]) / estimates["cold 8"]).flatten())
        for n, snr in estimates.items():
            err[n].append(((snr_exact - snr) / snr_exact).flatten())
            flips[n] += int((decisions(snr) != decisions(snr_exact)).sum())
        state, stats = _consolidate(state, basis, cold)
        low = stats["low_snr"].float().mean().item()
    count = 2 * boundaries * heads
    print(f"{name}: {count // 2} boundaries, low-SNR share at the last one {low:.0%}")
    for n in err:
        e = torch.cat(err[n])
        line = (f"  {'warm ' + str(n) if n in steps else n:7s}  σ below exact: median {e.median():.1e} "
                f"p99 {e.quantile(0.99):.1e} max {e.max():.1e}  decisions differing from exact {flips[n]:4d}/{count}")
        if n in steps:
            r = torch.cat(rel[n]).abs()
            line += f"  |Δσ|/σ_cold8 median {r.median():.1e} p99 {r.quantile(0.99):.1e} max {r.max():.1e}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--scenarios", nargs="+", default=["iid", "zipf_slow", "zipf", "zipf_fast", "recall"])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--boundaries", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.scenarios:
        run(name, args.steps, args.heads, args.boundaries, d=64, chunk=64, eta=0.1, seed=args.seed)


if __name__ == "__main__":
    main()
