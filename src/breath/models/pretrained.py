"""Weights without code: a model's parameters in a safetensors file, and loading them back.

An exported model (``breath export``) is a directory of

    config.json         the ModelConfig fields (``ModelConfig.from_dict`` reads it)
    model.safetensors   every parameter once (the zeta basis and table are rebuilt)

safetensors files hold plain tensors and a JSON header, so loading one cannot run code. They also
refuse two names for one tensor, and the LM head shares the token embedding's matrix
(``head.weight`` is ``embed.weight``): the file holds ``embed.weight`` only, and loading ties
the head to it again, as ``build_model`` made it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from breath.models.config import ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def tied_names(model: nn.Module) -> dict[str, str]:
    """State-dict names that are another name's tensor: ``{"head.weight": "embed.weight"}``."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def weights_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tensor once (tied aliases left out), contiguous, on the CPU."""
    aliases = tied_names(model)
    return {name: tensor.detach().cpu().contiguous()
            for name, tensor in model.state_dict().items() if name not in aliases}


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors file written from ``weights_state_dict`` into ``model``, strictly.

    Raises ``ValueError("weights: ...")`` in one line for a file that cannot be read, or that
    lacks, adds or reshapes a tensor (naming it).
    """
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # a missing file, a torn header, not safetensors at all
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"weights: cannot read {str(path)!r} as a safetensors file ({reason})") from None
    aliases = tied_names(model)
    for name, tensor in model.state_dict().items():
        if name in aliases:
            continue
        if name not in tensors:
            raise ValueError(f"weights: {str(path)!r} has no {name!r}, which this model needs "
                             "(was it exported from another architecture?)")
        if tensors[name].shape != tensor.shape:
            raise ValueError(f"weights: {name!r} has shape {tuple(tensors[name].shape)} in {str(path)!r} "
                             f"but {tuple(tensor.shape)} in the model its config describes")
    expected = set(model.state_dict()) - set(aliases)
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ValueError(f"weights: {str(path)!r} has {extra[0]!r}, which this model does not")
    model.load_state_dict({**tensors, **{alias: tensors[name] for alias, name in aliases.items()}})
    return model


def load_pretrained(directory: str | Path) -> nn.Module:
    """The model exported to ``directory`` (``config.json`` + ``model.safetensors``), in eval mode."""
    from breath.models import build_model  # the package's entry point imports this module

    config_path = Path(directory) / CONFIG_FILE
    try:
        fields = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"config: cannot read {str(config_path)!r} ({exc})") from None
    return build_model(ModelConfig.from_dict(fields), weights=Path(directory) / WEIGHTS_FILE).eval()
