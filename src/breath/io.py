"""Files written atomically: checkpoints, ``training_history.json``, ``config.json``, the tokenizer,
plots, ``eval_<split>.json`` and exported weights all go through ``atomic_write``.

The bytes go to a temporary file in the same directory, are flushed and fsynced, and only then
renamed over the target. A process killed at any moment, even mid-save, leaves either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from breath.runtime import ConfigError


class SaveError(RuntimeError):
    """A checkpoint or run file could not be written (disk full, permissions); the previous
    version of the file is intact."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` so that it is replaced whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise SaveError(f"could not write {path}: {reason}; "
                            "the previous version of the file (if any) is intact") from exc
        raise
    _fsync_directory(path.parent)  # make the rename itself durable


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every JSON reader accepts the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | Path, data: Any) -> None:
    text = json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_copy(source: str | Path, target: str | Path) -> None:
    data = Path(source).read_bytes()
    atomic_write(target, lambda file: file.write(data))


def prepare_output_dir(path: str | Path, option: str = "--output-dir") -> Path:
    """Create the directory ``option`` names and prove it is writable before any work starts."""
    directory = Path(path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(option, f"cannot write to {str(path)!r} ({exc.strerror or exc}); "
                          "allowed: a writable directory") from None
    return directory
