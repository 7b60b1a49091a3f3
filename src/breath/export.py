"""``breath export``: a run's model as weights that cannot run code when loaded.

    breath export checkpoints/phase2 --format safetensors --output exported/phase2

writes into the output directory (default: ``export/`` next to the checkpoint)

    model.safetensors   the parameters, each tensor once (the LM head is tied to the embedding)
    config.json         the ModelConfig fields
    tokenizer.json      the run's tokenizer

and ``breath.load_pretrained(directory)`` (or ``build_model(cfg, weights=".../model.safetensors")``)
rebuilds the model with exactly the checkpoint's function. Optimizer state and training history
stay in the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safetensors.torch import save

import breath
from breath.io import atomic_copy, atomic_write, atomic_write_json, prepare_output_dir
from breath.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, weights_state_dict
from breath.runs import RUN_ARGUMENT, Run, load_run
from breath.runtime import say

FORMATS = ("safetensors",)


def export_safetensors(loaded: Run, output_dir: Path) -> list[Path]:
    """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` of ``loaded`` into
    ``output_dir`` (each atomically); returns the paths written."""
    metadata = {"format": "pt", "breath_version": breath.__version__, "source": str(loaded.checkpoint_path),
                "epoch": str(loaded.checkpoint["epoch"]), "best_val_loss": str(loaded.checkpoint["best_val_loss"])}
    data = save(weights_state_dict(loaded.model), metadata=metadata)
    paths = [output_dir / WEIGHTS_FILE, output_dir / CONFIG_FILE, output_dir / "tokenizer.json"]
    atomic_write(paths[0], lambda file: file.write(data))
    atomic_write_json(paths[1], loaded.model.cfg.to_dict())
    atomic_copy(loaded.tokenizer_path, paths[2])
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar=RUN_ARGUMENT,
                        help="a run's output directory (its best_model.pt) or a checkpoint file")
    parser.add_argument("--format", choices=FORMATS, default="safetensors",
                        help="weights format (default: safetensors)")
    parser.add_argument("--output", metavar="DIR", help="output directory (default: export/ next to the checkpoint)")


def run(options: dict[str, Any]) -> None:
    """``breath export``: load the run, write the weights, config and tokenizer."""
    loaded = load_run(options["run"])
    output_dir = prepare_output_dir(options["output"] or loaded.directory / "export", option="--output")
    paths = export_safetensors(loaded, output_dir)
    parameters = loaded.model.num_parameters()
    say(f"exported {loaded.model.cfg.arch} ({parameters / 1e6:.2f}M parameters) from {loaded.checkpoint_path}: "
        + ", ".join(str(path) for path in paths))
    say(f"load it with: breath.load_pretrained({str(output_dir)!r})")
