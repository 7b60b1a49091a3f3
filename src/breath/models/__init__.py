"""Models: ``ModelConfig`` and ``build_model`` for the three architectures."""

from breath.models.config import ARCHS, PRESETS, ModelConfig
from breath.models.lm import CausalLM
from breath.models.output import ModelOutput, ModelState


def build_model(cfg: ModelConfig) -> CausalLM:
    """Validate ``cfg`` and build the model of ``cfg.arch`` (phase2 | phase1 | transformer)."""
    cfg.validate()
    if cfg.arch == "phase2":
        from breath.models.phase2 import Phase2LM as model_class
    elif cfg.arch == "phase1":
        from breath.models.phase1 import Phase1LM as model_class
    else:
        from breath.models.transformer import TransformerLM as model_class
    return model_class(cfg)


__all__ = ["ARCHS", "PRESETS", "ModelConfig", "ModelOutput", "ModelState", "CausalLM", "build_model"]
