"""breath: the "Phase 2: Breath of Life" language model, its baselines, and the tools to train,
evaluate, run and compare them.

    from breath import ModelConfig, build_model, load_pretrained
    model = build_model(ModelConfig.preset("small", vocab_size=10000))
    model = load_pretrained("checkpoints/phase2/export")   # a model written by `breath export`

With ``transformers`` installed, ``breath.hf`` registers the models with its Auto classes when
``transformers`` is first imported (importing it here would add seconds to every ``import breath``).
"""

import importlib.abc
import importlib.util
import sys
import warnings

from breath.models import ModelConfig, ModelOutput, ModelState, build_model, load_pretrained

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ModelOutput", "ModelState", "build_model", "load_pretrained", "__version__"]


class _RegisterWithTransformers(importlib.abc.MetaPathFinder):
    """Import ``breath.hf`` (which registers the Auto classes) right after ``transformers`` is imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _register()

        spec.loader.exec_module = exec_module
        return spec


def _register() -> None:
    """Import ``breath.hf``; with a transformers it cannot use, say why and leave transformers as it is."""
    try:
        import breath.hf  # noqa: F401
    except ImportError as exc:
        warnings.warn(f"breath's models are not registered with transformers' Auto classes: {exc}", stacklevel=2)


if sys.modules.get("transformers") is not None:
    _register()
elif importlib.util.find_spec("transformers") is not None:
    sys.meta_path.insert(0, _RegisterWithTransformers())
