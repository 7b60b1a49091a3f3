"""Training configuration: ``TrainConfig``, the ``--config`` file, and how the layers merge.

A run is described by two dataclasses: ``ModelConfig`` (``breath.models``: what the network is)
and ``TrainConfig`` (here: data, optimisation, schedule, runtime, logging, output). Both are filled
from one flat namespace whose names are the command-line flags with underscores
(``--learning-rate`` ↔ ``learning_rate``), merged from lowest to highest priority:

    defaults < the checkpoint being resumed < --preset < --config file < explicit flags

Every value is checked before any work starts; a bad one raises ``ConfigError``, whose message is
one line naming the option, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from breath.data.tokenizer import TOKENIZERS, default_tokenizer, min_vocab_size
from breath.models import ModelConfig
from breath.models.config import PRESETS, upgrade_saved
from breath.runtime import DEVICE_PATTERN, ConfigError, flag

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """How a model is trained: every option of ``breath train`` that is not a ``ModelConfig`` field."""

    # Data
    dataset: str = "shakespeare"
    vocab_size: int = 10000  # requested; the model gets the tokenizer's actual size
    tokenizer: str | None = None  # bpe | word; None: word for ptb, else bpe (resolve_config fills it in)
    cache_dir: str | None = None  # None: $BREATH_CACHE, else ~/.cache/breath
    num_train_batches: int | None = None  # per epoch; None: the whole split
    num_val_batches: int | None = None
    # Optimisation and schedule
    batch_size: int = 4
    num_epochs: int = 10
    # Stop when validation has not improved for this many epoch-end evaluations (None: never);
    # best_model.pt is the best epoch. The schedule still spans num_epochs (the cap).
    early_stopping_patience: int | None = None
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    gradient_clip_norm: float = 1.0
    warmup_steps: int | None = None  # None: 5% of the run's optimizer steps
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    max_bad_steps: int = 10  # consecutive non-finite steps before the run stops
    # Runtime
    device: str | None = None  # None: cuda when available, else cpu
    precision: str = "auto"
    compile: bool = False
    seed: int = 42
    # Logging
    log_every: int = 10
    eval_every: int | None = None  # steps; None: validate at epoch ends only
    use_wandb: bool = False
    wandb_project: str = "phase2-breath-of-life"
    wandb_name: str | None = None
    # Output
    output_dir: str = "checkpoints/phase2"
    save_every: int = 5
    resume: str | None = None
    preset: str | None = None  # recorded for reference; its sizes are already in ModelConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Raise ``ConfigError`` for the first value that is out of range."""
        for name in ("batch_size", "num_epochs", "max_bad_steps", "log_every", "save_every"):
            _check(self, name, getattr(self, name) >= 1, "an integer >= 1")
        for name in ("num_train_batches", "num_val_batches", "eval_every", "early_stopping_patience"):
            _check(self, name, getattr(self, name) is None or getattr(self, name) >= 1, "an integer >= 1")
        _check(self, "tokenizer", self.tokenizer is None or self.tokenizer in TOKENIZERS, " | ".join(TOKENIZERS))
        kind = self.tokenizer or default_tokenizer(self.dataset)
        _check(self, "vocab_size", self.vocab_size >= min_vocab_size(kind),
               f"an integer >= {min_vocab_size(kind)} for the {kind} tokenizer"
               + (" (256 byte tokens, <|endoftext|> and one merge)" if kind == "bpe" else " (<eos>, <unk>, one word)"))
        _check(self, "learning_rate", math.isfinite(self.learning_rate) and self.learning_rate > 0,
               "a finite number > 0")
        _check(self, "weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0,
               "a finite number >= 0")
        _check(self, "gradient_clip_norm", self.gradient_clip_norm > 0,
               "a number > 0 (inf turns clipping off)")
        _check(self, "warmup_steps", self.warmup_steps is None or self.warmup_steps >= 0, "an integer >= 0")
        _check(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]")
        _check(self, "seed", 0 <= self.seed < 2**63, "an integer in [0, 2**63)")
        _check(self, "precision", self.precision in PRECISIONS, " | ".join(PRECISIONS))
        _check(self, "device", self.device is None or bool(DEVICE_PATTERN.match(self.device)),
               "cpu | cuda | cuda:N")
        _check(self, "preset", self.preset is None or self.preset in PRESETS, " | ".join(PRESETS))
        for name in ("dataset", "output_dir", "wandb_project"):
            _check(self, name, bool(getattr(self, name).strip()), "a non-empty string")
        return self


def _check(cfg: TrainConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(flag(name), f"got {getattr(cfg, name)!r}; allowed: {allowed}")


# Every option a config file (or a flag) may set, with its type; the model's vocab_size is not an
# option: the tokenizer decides it (TrainConfig.vocab_size is the request).
_TRAIN_TYPES = typing.get_type_hints(TrainConfig)
_MODEL_TYPES = {k: v for k, v in typing.get_type_hints(ModelConfig).items() if k != "vocab_size"}
OPTION_TYPES: dict[str, Any] = {**_MODEL_TYPES, **_TRAIN_TYPES}
MODEL_OPTIONS = tuple(_MODEL_TYPES)
TRAIN_OPTIONS = tuple(_TRAIN_TYPES)


def coerce(name: str, value: Any, source: str) -> Any:
    """Convert a config-file value to the option's type (YAML reads ``1e-4`` as a string)."""
    hint = OPTION_TYPES[name]
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if type(None) in args:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str and isinstance(value, str):
        return value
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[base]
    raise ConfigError(flag(name), f"got {value!r} in {source}; allowed: {kind}")


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON file of options into a flat, typed dict.

    Keys are option names (``learning_rate`` or ``learning-rate``). The ``{"model": ..., "train":
    ...}`` layout of a run's ``config.json`` is accepted too, so a finished run can be repeated with
    ``--config RUN/config.json``; there the train section's requested ``vocab_size`` is used.
    """
    file = Path(path).expanduser()
    if file.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError("--config", f"{path!r} has an unsupported file type; allowed: .json, .yaml, .yml")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError("--config", f"{path!r} is not valid {file.suffix[1:].upper()}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path!r} holds a {type(data).__name__}; allowed: a mapping of option names")
    if set(data) <= {"model", "train"} and all(isinstance(v, dict) for v in data.values()):
        model = {k: v for k, v in data.get("model", {}).items() if k != "vocab_size"}
        data = {**model, **data.get("train", {})}
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTION_TYPES:
            close = difflib.get_close_matches(name, OPTION_TYPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError("--config", f"unknown option {key!r} in {path!r}{hint}; "
                              "allowed: the long names of `breath train --help`")
        options[name] = coerce(name, value, repr(path))
    return options


def checkpoint_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options saved in a checkpoint's ``config`` entry, as a flat dict (the resume layer)."""
    model = {k: v for k, v in upgrade_saved(config.get("model", {})).items() if k in MODEL_OPTIONS}
    train = {k: v for k, v in config.get("train", {}).items() if k in TRAIN_OPTIONS and k != "resume"}
    return {**model, **train}


def resolve_config(flags: Mapping[str, Any], file_options: Mapping[str, Any] | None = None,
                   resumed: Mapping[str, Any] | None = None) -> tuple[TrainConfig, ModelConfig]:
    """Merge the layers (defaults < resumed < preset < file < flags) and validate the result.

    ``flags`` holds only options given explicitly. A preset applies when the file or the flags
    name one; a resumed run's preset is already part of its saved sizes.
    """
    file_options = dict(file_options or {})
    options: dict[str, Any] = {**TrainConfig().to_dict(),
                               **{k: v for k, v in ModelConfig().to_dict().items() if k in MODEL_OPTIONS}}
    options.update(resumed or {})
    preset = flags.get("preset", file_options.get("preset"))
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError("--preset", f"got {preset!r}; allowed: {' | '.join(PRESETS)}")
        options.update(PRESETS[preset])
    options.update(file_options)
    options.update(flags)
    if options["tokenizer"] is None:  # recorded in the run's config, so eval and resume need not guess
        options["tokenizer"] = default_tokenizer(options["dataset"])
    train_cfg = TrainConfig(**{k: options[k] for k in TRAIN_OPTIONS}).validate()
    model_cfg = ModelConfig(vocab_size=train_cfg.vocab_size, **{k: options[k] for k in MODEL_OPTIONS})
    # --use-triton means "Triton wherever it can run": the ops pick it on CUDA, the reference elsewhere.
    if model_cfg.use_triton:
        model_cfg.use_triton = None
    validate_model_config(model_cfg)
    if model_cfg.arch == "phase2" and model_cfg.memory_chunk > model_cfg.n_seq:
        raise ConfigError("--memory-chunk", f"got {model_cfg.memory_chunk}, longer than --n-seq "
                          f"{model_cfg.n_seq}: consolidation would never run in training; "
                          f"allowed: 1..{model_cfg.n_seq}")
    return train_cfg, model_cfg


def run_config(train_cfg: TrainConfig, model_cfg: ModelConfig) -> dict[str, dict[str, Any]]:
    """A run's whole configuration as saved in checkpoints, ``config.json`` and W&B."""
    return {"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}


def validate_model_config(cfg: ModelConfig) -> None:
    """``cfg.validate()`` with its ``"<field>: ..."`` message turned into a ``ConfigError``."""
    try:
        cfg.validate()
    except ValueError as exc:
        field, _, rest = str(exc).partition(": ")
        if field in MODEL_OPTIONS or field == "vocab_size":
            raise ConfigError(flag(field), rest) from None
        raise ConfigError("--config", str(exc)) from None


def select_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` (None: plain float32). bf16 autocast is CUDA-only."""
    if precision == "fp32":
        return None
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        raise ConfigError("--precision", f"got 'bf16' but {device} has no bf16 autocast support; "
                          "allowed here: auto | fp32")
    return torch.bfloat16 if bf16_ok else None
