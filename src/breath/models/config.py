"""``ModelConfig``: every number that defines a model, the presets, and validation.

Field names equal the seed's command-line names with underscores (``--d-model`` → ``d_model``), so a
config, a checkpoint's ``config`` entry and the command line speak one language.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from breath.layers.zeta import zeta_table_size
from breath.ops.consolidation import ConsolidationConfig

ARCHS = ("phase2", "phase1", "transformer")
# The consolidation settings are declared once, in the op's config; the fields below take its defaults.
_CONSOLIDATION = ConsolidationConfig()
RESOLVENTS = ("causal", "full")
# Fields added after configs were first saved, with the value that keeps an older model's function.
LEGACY_VALUES: dict[str, Any] = {"memory_key_shift": False, "memory_conv": 0, "power_warm_start": False,
                                  "max_gamma": None}


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved model config (checkpoint, export) with the fields it predates filled in."""
    return {**{k: v for k, v in LEGACY_VALUES.items() if k not in data}, **data}

PRESETS: dict[str, dict[str, int]] = {
    "small": dict(d_model=256, n_layers=4, n_seq=512, num_heads=4, head_dim=64, ffn_dim=1024),
    "base": dict(d_model=512, n_layers=6, n_seq=1024, num_heads=8, head_dim=64, ffn_dim=2048),
    "large": dict(d_model=1024, n_layers=12, n_seq=2048, num_heads=16, head_dim=64, ffn_dim=4096),
}


@dataclass
class ModelConfig:
    """Architecture and Phase 2 mechanism settings (defaults: the seed's command-line defaults, plus
    the options it does not have, such as ``memory_conv``, at the values we measured best)."""

    vocab_size: int = 10000
    d_model: int = 512
    n_layers: int = 6
    n_seq: int = 512  # the training context; nothing in the model stops at it
    num_heads: int = 8  # memory heads = BK channels = attention heads
    head_dim: int = 64
    ffn_dim: int = 2048
    dropout: float = 0.1
    arch: str = "phase2"
    # "full" (the non-causal resolvent, diag (H − z)⁻¹ of the whole window) exists only as an
    # ablation: it lets future tokens change earlier outputs, so its training loss is leakage.
    resolvent: str = "causal"
    # Non-Hermitian forgetting and the dissipative Hebbian memory.
    base_decay: float = 0.01
    # Smooth upper bound of Γ (layers/bk.py; None or 0: unbounded). The seed expects Γ < 0.1.
    max_gamma: float | None = None
    hebbian_eta: float = 0.1
    memory_chunk: int = _CONSOLIDATION.chunk
    # Width of a causal depthwise convolution on the memory's q, k, v (0: none): keys and values then
    # see the few tokens before them, which associative recall needs (a departure from the seed,
    # docs/model.md). Configs saved before this field existed had none.
    memory_conv: int = 4
    # The fixed alternative to the convolution: the memory writes the previous token's key with the
    # current token's value. Off by default since the convolution measured better (QUALITY.md); kept
    # so models trained with it (configs of 2026-11-30) still load and run.
    memory_key_shift: bool = False
    # Consolidation at every chunk boundary.
    snr_threshold: float = _CONSOLIDATION.snr_threshold
    gamma_boost: float = _CONSOLIDATION.gamma_boost
    eta_boost: float = _CONSOLIDATION.eta_boost
    resonance_threshold: float = _CONSOLIDATION.resonance_threshold
    lyapunov_gamma_step: float = _CONSOLIDATION.lyapunov_gamma_step
    lyapunov_tolerance: float = _CONSOLIDATION.lyapunov_tolerance
    # σ_max for the SNR filter: power-iteration steps per boundary, started from the previous
    # boundary's vector (warm; benchmarks/power_iteration_warm_start.py chose 4 warm steps as
    # matching 8 cold ones). Configs saved before the warm start existed ran 8 cold steps.
    power_iterations: int = _CONSOLIDATION.power_iterations
    power_warm_start: bool = _CONSOLIDATION.power_warm_start
    # Zeta and kernels.
    zeta_position_embedding: bool = True
    zeta_init: bool = True
    use_triton: bool | None = None  # None: Triton when on CUDA and importable

    PRESETS = PRESETS  # class attribute (not a field): preset name -> overrides

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """``ModelConfig.preset("small", vocab_size=8000)``: a preset's sizes, then the overrides."""
        if name not in PRESETS:
            raise ValueError(f"preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """A saved config; fields it predates take the value that reproduces the saved model."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown model field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**upgrade_saved(data))

    def validate(self) -> "ModelConfig":
        """Raise ``ValueError("<field>: <value> ... allowed ...")`` for the first bad field."""

        def check(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; allowed: {allowed}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        check(self.arch in ARCHS, "arch", " | ".join(ARCHS))
        check(self.resolvent in RESOLVENTS, "resolvent", " | ".join(RESOLVENTS))
        for name in ("vocab_size", "d_model", "n_layers", "n_seq", "num_heads", "head_dim",
                     "ffn_dim", "memory_chunk", "power_iterations"):
            check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "a positive integer")
        check(self.vocab_size >= 2, "vocab_size", "an integer >= 2")
        check(self.head_dim % 2 == 0, "head_dim", "an even integer (the zeta basis pairs cos/sin modes)")
        check(self.d_model % 2 == 0, "d_model", "an even integer (sin/cos position-embedding pairs)")
        check(0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)")
        check(self.base_decay > 0, "base_decay", "a number > 0 (Γ = softplus(·) + base_decay)")
        check(self.max_gamma is None or self.max_gamma == 0 or self.max_gamma > self.base_decay, "max_gamma",
              "null or 0 (unbounded), or a number > base_decay")
        check(self.hebbian_eta > 0, "hebbian_eta", "a number > 0")
        check(self.snr_threshold > 0, "snr_threshold", "a number > 0 (random memories score ≈ 1)")
        check(self.gamma_boost >= 1, "gamma_boost", "a number >= 1")
        check(self.eta_boost >= 1, "eta_boost", "a number >= 1")
        check(0 <= self.resonance_threshold < 1, "resonance_threshold",
              "a number in [0, 1) (fraction of the mean mode energy; 0 keeps every mode)")
        check(self.lyapunov_gamma_step >= 0, "lyapunov_gamma_step", "a number >= 0")
        check(self.lyapunov_tolerance >= 1, "lyapunov_tolerance", "a number >= 1")
        check(is_int(self.memory_conv) and (self.memory_conv == 0 or self.memory_conv >= 2), "memory_conv",
              "0 (none) or an integer >= 2")
        check(self.use_triton in (None, True, False), "use_triton", "true, false or null (auto)")
        for name in ("memory_key_shift", "power_warm_start", "zeta_position_embedding", "zeta_init"):
            check(isinstance(getattr(self, name), bool), name, "true or false")
        # The zeta table must hold d_model/2 zeros for the position embedding and up to d_model
        # singular values for the zeta init (every block matrix has d_model on one side).
        zeros = zeta_table_size()
        needed = max(self.d_model if self.zeta_init else 0, self.d_model // 2 if self.zeta_position_embedding else 0)
        check(needed <= zeros, "d_model", f"a width needing at most {zeros} zeta zeros (zeta_init uses d_model, the "
              "position embedding d_model/2); regenerate the table with scripts/generate_zeta_zeros.py --count N")
        check(self.head_dim <= 2 * zeros, "head_dim", f"at most {2 * zeros} (the zeta resonance basis)")
        return self
