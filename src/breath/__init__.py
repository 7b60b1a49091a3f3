"""breath: the "Phase 2: Breath of Life" language model, its baselines, and the tools to train,
evaluate, run and compare them.

    from breath import ModelConfig, build_model, load_pretrained
    model = build_model(ModelConfig.preset("small", vocab_size=10000))
    model = load_pretrained("checkpoints/phase2/export")   # a model written by `breath export`
"""

from breath.models import ModelConfig, ModelOutput, ModelState, build_model, load_pretrained

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ModelOutput", "ModelState", "build_model", "load_pretrained", "__version__"]
