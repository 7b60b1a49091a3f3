"""Training configuration: ``TrainConfig``, the ``--config`` file, and how the layers merge.

A run is described by two dataclasses: ``ModelConfig`` (``breath.models``: what the network is)
and ``TrainConfig`` (here: data, optimisation, schedule, runtime, logging, output). Both are filled
from one flat namespace whose names are the command-line flags with underscores
(``--learning-rate`` ↔ ``learning_rate``), merged from lowest to highest priority:

    defaults < the checkpoint being resumed < --preset < --config file < explicit flags

Every value is checked before any work starts; a bad one raises ``ConfigError``, whose message is
one line naming the option, the bad value and what is allowed. The dataclasses raise
``FieldError``s naming the field; :meth:`ConfigError.from_field` gives the field's flag.
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
from breath.errors import FieldError
from breath.models import ModelConfig
from breath.models.config import PRESETS, legacy_use_triton, upgrade_saved
from breath.options import flag_of, is_option, option
from breath.runtime import DEVICE_PATTERN, ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def flag(name: str) -> str:
    """The flag of the option or setting ``name``: its ``option`` metadata's, else ``--`` and the
    name with dashes (``learning_rate`` → ``--learning-rate``)."""
    return _FLAGS.get(name) or flag_of(name)


@dataclass
class TrainConfig:
    """How a model is trained: every option of ``breath train`` that is not a ``ModelConfig`` field
    (but ``--preset`` and ``--config``, which are layers of options, not settings)."""

    dataset: str = option("shakespeare", "shakespeare | brown | ptb | english (see Data below), a .txt file, a .jsonl "
                          "file (a text field per line), a directory of them, or a Hugging Face dataset name",
                          "data")
    # requested; the model gets the tokenizer's actual size
    vocab_size: int = option(10000, "vocabulary size to train (BPE >= 258, word >= 3); a small corpus may support "
                             "fewer, which is said once and used", "data")
    # resolve_config fills it in
    tokenizer: str | None = option(None, "byte-level BPE, or one token per whitespace-separated word and line end "
                                   "(eos), for text that is already tokenised", "data", choices=TOKENIZERS,
                                   shown_default="word for ptb, else bpe")
    cache_dir: str | None = option(None, "downloaded corpora, tokenizers, encoded tokens", "data", metavar="DIR",
                                   shown_default="$BREATH_CACHE, else ~/.cache/breath")
    num_train_batches: int | None = option(None, "train batches per epoch", "data", shown_default="the whole split")
    num_val_batches: int | None = option(None, "validation batches per evaluation", "data",
                                         shown_default="the whole split")
    batch_size: int = option(4, "windows per batch; per rank under torchrun (the global batch is this × ranks)",
                             "optimisation")
    num_epochs: int = option(10, "epochs to train (the most, with --early-stopping-patience)", "optimisation")
    early_stopping_patience: int | None = option(None, "stop once N epoch-end validations in a row did not improve; "
                                                 "best_model.pt is the best (the schedule still spans --num-epochs)",
                                                 "optimisation", shown_default="off")
    learning_rate: float = option(1e-4, "peak AdamW learning rate (β = 0.9, 0.95)", "optimisation",
                                  shown_default="1e-4")
    weight_decay: float = option(0.01, "AdamW weight decay, on weight matrices only (not on norms, biases or "
                                 "embeddings)", "optimisation")
    gradient_clip_norm: float = option(1.0, "clip the global gradient norm to this (inf: off)", "optimisation")
    warmup_steps: int | None = option(None, "linear warmup steps, then cosine decay", "optimisation",
                                      shown_default="5% of the run's optimizer steps")
    min_lr_ratio: float = option(0.1, "the cosine decays to learning-rate × this", "optimisation")
    max_bad_steps: int = option(10, "stop after this many consecutive non-finite steps", "optimisation")
    device: str | None = option(None, "cpu | cuda | cuda:N", "runtime", shown_default="cuda if available, else cpu")
    precision: str = option("auto", "the training steps' autocast. auto: bf16 on a CUDA GPU that supports it, "
                            "else fp32; bf16 is refused without CUDA. Validation is fp32 always", "runtime",
                            choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the model", "runtime")
    seed: int = option(42, "random seed (initialisation, data order, dropout)", "runtime")
    log_every: int = option(10, "steps between log records (and progress-bar updates)", "logging")
    eval_every: int | None = option(None, "also validate every N steps", "logging", shown_default="at epoch ends only")
    use_wandb: bool = option(False, 'log to Weights & Biases (pip install "breath[wandb]")', "logging")
    wandb_project: str = option("phase2-breath-of-life", "W&B project", "logging")
    wandb_name: str | None = option(None, "W&B run name", "logging", shown_default="W&B's")
    output_dir: str = option("checkpoints/phase2", "where checkpoints, history, metrics, plots go", "output")
    save_every: int = option(5, "write checkpoint_epoch{N}.pt every N epochs (and after the last)", "output")
    resume: str | None = option(None, "continue the run saved in this checkpoint exactly; its options are the "
                                "defaults", "run", metavar="PATH")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Raise ``FieldError(field, "got <value>; allowed: ...")`` for the first value out of range."""
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
        for name in ("dataset", "output_dir", "wandb_project"):
            _check(self, name, bool(getattr(self, name).strip()), "a non-empty string")
        return self


def _check(cfg: TrainConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise FieldError(name, f"got {getattr(cfg, name)!r}; allowed: {allowed}")


_OPTION_FIELDS = [f for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls) if is_option(f)]
_FLAGS = {f.name: flag_of(f) for f in _OPTION_FIELDS}
# Every option a config file (or a flag) may set, with its type; the model's vocab_size is not an
# option: the tokenizer decides it (TrainConfig.vocab_size is the request).
_TRAIN_TYPES = typing.get_type_hints(TrainConfig)
_MODEL_TYPES = {k: v for k, v in typing.get_type_hints(ModelConfig).items() if k != "vocab_size"}
OPTION_TYPES: dict[str, Any] = {**_MODEL_TYPES, **_TRAIN_TYPES}
MODEL_OPTIONS = tuple(_MODEL_TYPES)
TRAIN_OPTIONS = tuple(_TRAIN_TYPES)


def option_type(name: str) -> type:
    """The type of option ``name`` without its None (``int | None`` → int)."""
    args = typing.get_args(OPTION_TYPES[name])
    return next((a for a in args if a is not type(None)), OPTION_TYPES[name]) if args else OPTION_TYPES[name]


def coerce(name: str, value: Any, source: str) -> Any:
    """Convert a config-file value to the option's type (YAML reads ``1e-4`` as a string)."""
    if name == "use_triton":  # a boolean or null in files written before it took auto | on | off
        value = legacy_use_triton(value)
    args, base = typing.get_args(OPTION_TYPES[name]), option_type(name)
    if value is None:
        if type(None) in args:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.lower()]
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


# YAML 1.1 reads on/off/yes/no as booleans, which would turn ``use_triton: on`` into true (the
# old spelling of auto): the loader keeps them strings, and a boolean option accepts them as words.
_BOOLEAN_WORDS = {"true": True, "false": False, "on": True, "off": False, "yes": True, "no": False}


class _YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` where only true/false (any case) are booleans, as in YAML 1.2."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


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
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.load(text, Loader=_YamlLoader)
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
        if name == "preset":  # a layer, checked by resolve_config (a run's config.json of before holds null)
            if value is not None:
                options[name] = value
            continue
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
    train_cfg = TrainConfig(**{k: options[k] for k in TRAIN_OPTIONS})
    model_cfg = ModelConfig(vocab_size=train_cfg.vocab_size, **{k: options[k] for k in MODEL_OPTIONS})
    try:
        train_cfg.validate()
        model_cfg.validate()
    except FieldError as exc:
        raise ConfigError.from_field(exc, flag) from None
    if model_cfg.arch == "phase2" and model_cfg.memory_chunk > model_cfg.n_seq:
        raise ConfigError("--memory-chunk", f"got {model_cfg.memory_chunk}, longer than --n-seq "
                          f"{model_cfg.n_seq}: consolidation would never run in training; "
                          f"allowed: 1..{model_cfg.n_seq}")
    return train_cfg, model_cfg


def run_config(train_cfg: TrainConfig, model_cfg: ModelConfig) -> dict[str, dict[str, Any]]:
    """A run's whole configuration as saved in checkpoints, ``config.json`` and W&B."""
    return {"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}




def select_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` (None: plain float32). bf16 autocast is CUDA-only."""
    if precision == "fp32":
        return None
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        raise ConfigError("--precision", f"got 'bf16' but {device} has no bf16 autocast support; "
                          "allowed here: auto | fp32")
    return torch.bfloat16 if bf16_ok else None
