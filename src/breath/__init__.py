"""breath: the "Phase 2: Breath of Life" language model, its baselines, and the tools to train,
evaluate, run and compare them.

    from breath import ModelConfig, build_model
    model = build_model(ModelConfig.preset("small", vocab_size=10000))
"""

from breath.models import ModelConfig, ModelOutput, ModelState, build_model

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ModelOutput", "ModelState", "build_model", "__version__"]
