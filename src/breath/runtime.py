"""What every command shares at run time: option errors, the device, messages on the console.

Training (``breath.train``) and the inference commands (``breath eval``, ``generate``, ``export``)
both import from here; nothing here imports either of them.
"""

from __future__ import annotations

import re
import sys

import torch
from tqdm import tqdm

from breath.errors import FieldError

# No mps: the memory consolidation and the zeta tables compute in float64, which MPS lacks.
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A bad option value. ``option`` is its command-line spelling (``--batch-size``)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option

    @classmethod
    def from_field(cls, exc: FieldError, spell=None) -> "ConfigError":
        """The error of a bad field, under the field's flag (``spell``: field name → flag; default
        :func:`flag`)."""
        return cls((spell or flag)(exc.field), exc.message)


def flag(name: str) -> str:
    """``learning_rate`` → ``--learning-rate``."""
    return "--" + name.replace("_", "-")


def select_device(name: str | None) -> torch.device:
    """The ``--device`` to run on: the named one (checked to exist), else cuda when available."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_PATTERN.match(name):  # TrainConfig.validate checks this too; other commands do not
        raise ConfigError("--device", f"got {name!r}; allowed: cpu | cuda | cuda:N")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device", f"got {name!r} but CUDA is not available on this machine; "
                              "allowed: cpu (or leave --device out)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("--device", f"got {name!r} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); allowed: cuda:0..")
    return device


def say(text: str) -> None:
    """Print a line on stdout without breaking an active progress bar."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()
