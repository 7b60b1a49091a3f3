"""Aggregate the per-layer mechanism statistics into the diagnostics of DESIGN §6.

Everything stays a device tensor (no host synchronisation); a statistic over an empty set (no
chunk boundary crossed in the call, e.g. one decoding step) is NaN; a model without consolidation
has no memory statistics at all (only the Γ ones). Names are part of the interface:

    mean_gamma, std_gamma, min_gamma, max_gamma      BK forgetting rate Γ over layers, heads, tokens
    mean_effective_gamma                             Γ the memory applied (× SNR boost + Lyapunov
                                                     step), mean over the chunks that ended
    mean_snr, low_snr_ratio                          memory SNR at chunk boundaries, fraction < threshold
    num_resonant_modes, total_resonance_energy       kept zeta modes per head and their energy
    lyapunov_stable_ratio, mean_fast_weight_energy   stable head-chunks, ‖S‖²_F before consolidation

plus ``per_layer``: the same names, each a tensor of shape (n_layers,).
"""

from __future__ import annotations

import torch

# diagnostic name -> per-boundary statistic from the memory op
MEMORY_STATS = {
    "mean_snr": "snr",
    "low_snr_ratio": "low_snr",
    "num_resonant_modes": "resonant_modes",
    "total_resonance_energy": "resonance_energy",
    "lyapunov_stable_ratio": "stable",
    "mean_fast_weight_energy": "energy",
    "mean_effective_gamma": "effective_gamma",
}


def _gamma_stats(gamma: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mean_gamma": gamma.mean(), "std_gamma": gamma.std(), "min_gamma": gamma.min(),
            "max_gamma": gamma.max()}


@torch.no_grad()
def summarize(layer_stats: list[dict[str, torch.Tensor]]) -> dict:
    """``layer_stats[i]`` holds layer i's ``gamma`` (B, T, C) and/or memory stats (B, H, boundaries)."""
    overall: dict[str, torch.Tensor] = {}
    per_layer: dict[str, torch.Tensor] = {}
    if layer_stats and "gamma" in layer_stats[0]:
        gammas = [stats["gamma"].detach().float() for stats in layer_stats]
        overall.update(_gamma_stats(torch.cat([g.flatten() for g in gammas])))
        layers = [_gamma_stats(g) for g in gammas]
        per_layer.update({name: torch.stack([layer[name] for layer in layers]) for name in layers[0]})
    for name, key in MEMORY_STATS.items():
        if layer_stats and key in layer_stats[0]:
            values = [stats[key].detach().float() for stats in layer_stats]
            overall[name] = torch.cat([v.flatten() for v in values]).mean()
            per_layer[name] = torch.stack([v.mean() for v in values])
    if per_layer:
        overall["per_layer"] = per_layer
    return overall
