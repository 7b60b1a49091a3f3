"""``ModelConfig``: every number that defines a model, the presets, and validation.

Field names equal the seed's command-line names with underscores (``--d-model`` → ``d_model``), so a
config, a checkpoint's ``config`` entry and the command line speak one language.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from breath.errors import FieldError
from breath.layers.zeta import zeta_table_size
from breath.ops.backend import TRITON_MODES
from breath.ops.consolidation import ConsolidationConfig
from breath.options import option

ARCHS = ("phase2", "phase1", "transformer")
# The consolidation settings are declared once, in the op's config; the fields below take its defaults.
_CONSOLIDATION = ConsolidationConfig()
RESOLVENTS = ("causal", "full")
PHASE2 = "Phase 2 dynamics"  # the option group of the mechanism's settings
# Fields added after configs were first saved, with the value that keeps an older model's function.
LEGACY_VALUES: dict[str, Any] = {"memory_key_shift": False, "memory_conv": 0, "power_warm_start": False,
                                  "max_gamma": None}


def legacy_use_triton(value: Any) -> Any:
    """``use_triton`` as saved before it took ``auto | on | off``: null and true meant "Triton where it
    can run" (the command line turned true into null) → auto; false → off. Other values pass as they are."""
    return {None: "auto", True: "auto", False: "off"}[value] if value is None or isinstance(value, bool) else value


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved model config (checkpoint, export) with the fields it predates filled in and old
    ``use_triton`` values translated."""
    data = {**{k: v for k, v in LEGACY_VALUES.items() if k not in data}, **data}
    if "use_triton" in data:
        data["use_triton"] = legacy_use_triton(data["use_triton"])
    return data

PRESETS: dict[str, dict[str, int]] = {
    "small": dict(d_model=256, n_layers=4, n_seq=512, num_heads=4, head_dim=64, ffn_dim=1024),
    "base": dict(d_model=512, n_layers=6, n_seq=1024, num_heads=8, head_dim=64, ffn_dim=2048),
    "large": dict(d_model=1024, n_layers=12, n_seq=2048, num_heads=16, head_dim=64, ffn_dim=4096),
}


@dataclass
class ModelConfig:
    """Architecture and Phase 2 mechanism settings (defaults: the seed's command-line defaults, plus
    the options it does not have, such as ``memory_conv``, at the values we measured best). Each
    field but ``vocab_size`` is a ``breath train`` option (:func:`breath.options.option`)."""

    vocab_size: int = 10000  # the tokenizer's size; the option is TrainConfig.vocab_size (the request)
    d_model: int = option(512, "model width", "model")
    n_layers: int = option(6, "number of blocks", "model")
    # the training context; nothing in the model stops at it
    n_seq: int = option(512, "training context length (tokens per window)", "model")
    num_heads: int = option(8, "memory heads = BK channels (attention heads for the transformer)", "model")
    head_dim: int = option(64, "width of one head (even)", "model")
    ffn_dim: int = option(2048, "hidden width of the MLP", "model")
    dropout: float = option(0.1, "dropout probability, in [0, 1)", "model")
    arch: str = option("phase2", "architecture: Phase 2, the Phase 1 baseline (Γ = 0, no memory), or a GPT-style "
                       "transformer of the same width and depth", "model", choices=ARCHS)
    # "full" (the non-causal resolvent, diag (H − z)⁻¹ of the whole window) exists only as an
    # ablation: it lets future tokens change earlier outputs, so its training loss is leakage.
    resolvent: str = option("causal", "BK resolvent; full (the whole window's, non-causal) is an ablation only: "
                            "future tokens change earlier outputs, so its loss is leakage", "model",
                            choices=RESOLVENTS)
    # Non-Hermitian forgetting and the dissipative Hebbian memory.
    base_decay: float = option(0.01, "floor of the forgetting rate Γ = softplus(.) + base_decay (> 0)", PHASE2)
    # The seed expects Γ < 0.1; unbounded by default (the bound measured within seed noise, QUALITY.md).
    max_gamma: float | None = option(None, "smooth upper bound of Γ: Γ = base_decay + m·tanh(softplus(·)/m), m = max_gamma − "
                                     "base_decay (> base-decay; 0 or unset: unbounded)", PHASE2,
                                     metavar="X", shown_default="unbounded")
    hebbian_eta: float = option(0.1, "Hebbian write strength η (> 0)", PHASE2)
    memory_chunk: int = option(_CONSOLIDATION.chunk, "tokens per memory chunk; consolidation runs at chunk ends "
                               "(<= --n-seq)", PHASE2)
    # Width of a causal depthwise convolution on the memory's q, k, v (0: none): keys and values then
    # see the few tokens before them, which associative recall needs (a departure from the seed,
    # docs/model.md). Configs saved before this field existed had none.
    memory_conv: int = option(4, "width of a causal depthwise convolution on the memory's q, k, v (0: none, the "
                              "seed's write of one token's key and value)", PHASE2)
    # The fixed alternative to the convolution: the memory writes the previous token's key with the
    # current token's value. Off by default since the convolution measured better (QUALITY.md); kept
    # so models trained with it (configs of 2026-11-30) still load and run.
    memory_key_shift: bool = option(False, "the memory writes the previous token's key with this token's value "
                                    "(the fixed alternative to the convolution)", PHASE2)
    # Consolidation at every chunk boundary. Off is a departure from the seed, for speed: the memory
    # is then the plain decaying one, measured as good at small scale (docs/reports/2026-12-08-cpu-consolidation.md).
    consolidation: bool = option(_CONSOLIDATION.enabled, "consolidate the memory at every chunk end (SNR filter, "
                                 "zeta resonance, Lyapunov monitor); off: the plain decaying memory (a departure "
                                 "from the seed), no SNR, resonance or stability diagnostics, and kernels that "
                                 "skip the consolidation's sequential work", PHASE2)
    snr_threshold: float = option(_CONSOLIDATION.snr_threshold, "SNR below it: Γ × gamma-boost for the next chunk; "
                                  "above: η × eta-boost", PHASE2)
    gamma_boost: float = option(_CONSOLIDATION.gamma_boost, "Γ multiplier for the chunk after a low SNR (>= 1)", PHASE2)
    eta_boost: float = option(_CONSOLIDATION.eta_boost, "η multiplier for the chunk after a high SNR (>= 1)", PHASE2)
    resonance_threshold: float = option(_CONSOLIDATION.resonance_threshold, "keep zeta modes with energy above "
                                        "this fraction of the mean, in [0, 1)", PHASE2)
    lyapunov_gamma_step: float = option(_CONSOLIDATION.lyapunov_gamma_step, "Γ added for the next chunk of an "
                                        "unstable head (>= 0)", PHASE2)
    lyapunov_tolerance: float = option(_CONSOLIDATION.lyapunov_tolerance, "τ of the stability rule: a chunk is "
                                       "stable when the energy its writes added is at most τ times what its "
                                       "decay removes at equilibrium (>= 1; 1 is the seed's strict dE <= 0)", PHASE2)
    # σ_max for the SNR filter: power-iteration steps per boundary, started from the previous
    # boundary's vector (warm; benchmarks/power_iteration_warm_start.py chose 4 warm steps as
    # matching 8 cold ones). Configs saved before the warm start existed ran 8 cold steps.
    power_iterations: int = option(_CONSOLIDATION.power_iterations, "power iterations per boundary for the "
                                   "SNR's top singular value", PHASE2)
    power_warm_start: bool = option(_CONSOLIDATION.power_warm_start, "start the power iteration from the previous "
                                    "boundary's vector", PHASE2)
    # Zeta and kernels.
    zeta_position_embedding: bool = option(True, "add the zeta position embedding", PHASE2)
    zeta_init: bool = option(True, "zeta singular-value profile at initialisation", PHASE2)
    use_triton: str = option("auto", "Triton kernels (BK and memory; the transformer's one-token decode "
                             "attention): auto (where they run: CUDA, Ampere or newer, Triton installed, a "
                             "head_dim and memory_chunk they compile for; else the PyTorch path, said once), on "
                             "(always; an error where they cannot run), off; the flag alone means auto", PHASE2,
                             choices=TRITON_MODES, const="auto")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """``ModelConfig.preset("small", vocab_size=8000)``: a preset's sizes, then the overrides."""
        if name not in PRESETS:
            raise FieldError("preset", f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """A saved config; fields it predates take the value that reproduces the saved model."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FieldError("config", f"unknown model field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**upgrade_saved(data))

    def validate(self) -> "ModelConfig":
        """Raise ``FieldError(field, "got <value>; allowed: ...")`` for the first bad field."""

        def check(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise FieldError(name, f"got {getattr(self, name)!r}; allowed: {allowed}")

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
        check(isinstance(self.use_triton, str) and self.use_triton in TRITON_MODES, "use_triton",
              " | ".join(TRITON_MODES))
        check(self.resolvent == "causal" or self.use_triton != "on", "use_triton",
              "auto | off with resolvent='full' (the Triton resolvent kernel is causal only)")
        for name in ("memory_key_shift", "consolidation", "power_warm_start", "zeta_position_embedding", "zeta_init"):
            check(isinstance(getattr(self, name), bool), name, "true or false")
        # The zeta table must hold d_model/2 zeros for the position embedding and up to d_model
        # singular values for the zeta init (every block matrix has d_model on one side).
        zeros = zeta_table_size()
        needed = max(self.d_model if self.zeta_init else 0, self.d_model // 2 if self.zeta_position_embedding else 0)
        check(needed <= zeros, "d_model", f"a width needing at most {zeros} zeta zeros (zeta_init uses d_model, the "
              "position embedding d_model/2); regenerate the table with scripts/generate_zeta_zeros.py --count N")
        check(self.head_dim <= 2 * zeros, "head_dim", f"at most {2 * zeros} (the zeta resonance basis)")
        return self
