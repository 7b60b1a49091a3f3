"""Models: ``ModelConfig`` and ``build_model`` for the three architectures, and
``load_pretrained`` for a model exported by ``breath export``."""

from __future__ import annotations

from pathlib import Path

from breath.models.config import ARCHS, PRESETS, ModelConfig
from breath.models.lm import CausalLM
from breath.models.output import ModelOutput, ModelState
from breath.models.pretrained import load_pretrained, load_weights


def build_model(cfg: ModelConfig, weights: str | Path | None = None) -> CausalLM:
    """Validate ``cfg`` and build the model of ``cfg.arch`` (phase2 | phase1 | transformer).

    ``weights``: a ``model.safetensors`` file (``breath export``) to load, strictly; without it
    the parameters are freshly initialised (under ``torch.manual_seed``).
    """
    cfg.validate()
    if cfg.arch == "phase2":
        from breath.models.phase2 import Phase2LM as model_class
    elif cfg.arch == "phase1":
        from breath.models.phase1 import Phase1LM as model_class
    else:
        from breath.models.transformer import TransformerLM as model_class
    model = model_class(cfg)
    if weights is not None:
        load_weights(model, weights)
    return model


__all__ = ["ARCHS", "PRESETS", "ModelConfig", "ModelOutput", "ModelState", "CausalLM", "build_model",
           "load_pretrained"]
