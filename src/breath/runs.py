"""Trained runs, read back: checkpoints loaded safely, the model they hold rebuilt, and a run
directory opened for inference (``breath eval``, ``generate``, ``export``; ``--resume`` too).

Checkpoints (written by ``breath.train.checkpoint.save_checkpoint``) hold only tensors and plain
containers (dict, list, tuple, str, int, float, bool, None), so they load with
``torch.load(path, weights_only=True)``, which cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Tokenizer
from torch import nn

from breath.data.tokenizer import load_tokenizer
from breath.models import ModelConfig, build_model

#: what every checkpoint holds (the seed's keys); trainer state for exact resume comes beside them
CHECKPOINT_KEYS = (
    "epoch", "global_step", "best_val_loss", "model_state_dict", "optimizer_state_dict",
    "scheduler_state_dict", "config", "train_losses", "val_losses", "gamma_history",
    "snr_history", "resonance_history", "stability_history",
)

BEST_CHECKPOINT = "best_model.pt"  # what a run directory stands for in eval/generate/export
RUN_ARGUMENT = "RUN_DIR_OR_CHECKPOINT"  # how those commands name their positional argument


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (missing, truncated, unsafe) or does not fit the model."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    option: str = "--resume") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; any problem is a one-line ``CheckpointError``
    that starts with ``option`` and says what is wrong (missing, truncated, unsafe, incomplete)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"{option}: {str(path)!r} {what}; allowed: a checkpoint file (.pt) "
                              "written by breath train")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its directory is at the end
        raise CheckpointError(f"{option}: {str(path)!r} is truncated or corrupt: not a complete "
                              "PyTorch checkpoint archive")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged file can make the unpickler raise almost anything
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise CheckpointError(f"{option}: {str(path)!r} holds objects other than tensors and plain "
                                  "containers; refusing to load it (it could run code)") from None
        raise CheckpointError(f"{option}: {str(path)!r} is truncated or corrupt and cannot be read "
                              f"({_first_line(exc)})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{option}: {str(path)!r} holds a {type(checkpoint).__name__}, "
                              "not a breath checkpoint")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{option}: {str(path)!r} is not a breath training checkpoint: "
                              f"missing key {missing[0]!r}")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_compatible(state_dict: dict[str, torch.Tensor], model: nn.Module, option: str = "--resume") -> None:
    """Raise a ``CheckpointError`` naming the first parameter that is missing, extra or reshaped."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise CheckpointError(f"{option}: the checkpoint has no {key!r} that this model needs "
                                  "(was it trained with another --arch?)")
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{option}: {key!r} has shape {tuple(state_dict[key].shape)} in the "
                                  f"checkpoint but {tuple(tensor.shape)} in the model the options "
                                  "describe; leave the model options out to use the checkpoint's")
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise CheckpointError(f"{option}: the checkpoint has {extra[0]!r}, which this model does not "
                              "(was it trained with another --arch?)")


def load_model(path: str | Path, map_location: str | torch.device = "cpu", option: str = "checkpoint",
               overrides: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, with its weights: ``(model, checkpoint)``.

    ``overrides`` replace fields of the saved ``ModelConfig`` that do not change the parameters
    (``resolvent``, ``use_triton``, ...), or compute them from the saved config (a function of its
    dict); errors are ``CheckpointError``s starting with ``option``.
    """
    checkpoint = load_checkpoint(path, map_location, option=option)
    if callable(overrides):
        overrides = overrides(checkpoint["config"]["model"])
    try:
        model = build_model(ModelConfig.from_dict({**checkpoint["config"]["model"], **(overrides or {})}))
    except (ValueError, TypeError, KeyError) as exc:  # a config this version cannot build
        raise CheckpointError(f"{option}: {str(path)!r} holds a model config this version of breath "
                              f"cannot build ({_first_line(exc)})") from None
    check_compatible(checkpoint["model_state_dict"], model, option=option)
    model.load_state_dict(checkpoint["model_state_dict"])
    return model.to(map_location), checkpoint


@dataclass
class Run:
    """A trained model ready for inference: the checkpoint, its model (in eval mode) and the
    tokenizer the run was trained with (``tokenizer.json`` next to the checkpoint)."""

    checkpoint_path: Path
    checkpoint: dict[str, Any]
    model: nn.Module
    tokenizer: Tokenizer

    @property
    def directory(self) -> Path:
        return self.checkpoint_path.parent

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def train_options(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields the run was trained with (dataset, cache_dir, batch_size,
        vocab_size...), as its checkpoint saved them."""
        return self.checkpoint["config"]["train"]


def load_run(path: str | Path, overrides: dict[str, Any] | None = None, option: str = RUN_ARGUMENT) -> Run:
    """Open a run directory (its ``best_model.pt``) or a checkpoint file for inference, on the CPU.

    Every problem (missing path, a directory that is not a run, a truncated, corrupt or foreign
    checkpoint, a missing or mismatched tokenizer) is a one-line ``CheckpointError`` naming
    ``option``; ``overrides`` are passed to ``load_model``.

    A run trained with ``use_triton='on'`` (the kernels required, on its GPU) is opened with
    ``'auto'``: the kernels are a choice of the device, and inference may run where they cannot (a
    CPU); ``auto`` uses them on a GPU that runs them and the PyTorch path elsewhere (on a CPU
    without a word: that is its design there). ``'off'`` is kept.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{option}: {str(path)!r} does not exist; allowed: the --output-dir of "
                              "breath train or a checkpoint file (.pt) in it")
    if path.is_dir():
        if not (path / BEST_CHECKPOINT).is_file():
            raise CheckpointError(f"{option}: {str(path)!r} is not a run directory (it has no "
                                  f"{BEST_CHECKPOINT}); allowed: the --output-dir of breath train or a "
                                  "checkpoint file (.pt) in it")
        path = path / BEST_CHECKPOINT
    def for_inference(saved: dict[str, Any]) -> dict[str, Any]:
        device_choice = {"use_triton": "auto"} if saved.get("use_triton") == "on" else {}
        return {**device_choice, **(overrides or {})}

    model, checkpoint = load_model(path, option=option, overrides=for_inference)
    tokenizer_file = path.parent / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{option}: {str(path)!r} has no tokenizer.json next to it; allowed: a "
                              "checkpoint in the output directory of breath train (which saves the "
                              "run's tokenizer there)")
    try:
        tokenizer = load_tokenizer(tokenizer_file)
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise CheckpointError(f"{option}: {str(tokenizer_file)!r} is not a readable tokenizer "
                              f"({_first_line(exc)})") from None
    if tokenizer.get_vocab_size() != model.cfg.vocab_size:
        raise CheckpointError(f"{option}: {str(tokenizer_file)!r} has {tokenizer.get_vocab_size()} tokens "
                              f"but the model {model.cfg.vocab_size}: it is not this run's tokenizer")
    return Run(path, checkpoint, model.eval(), tokenizer)
