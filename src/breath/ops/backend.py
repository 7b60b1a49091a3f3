"""Which implementation an op runs: the Triton kernel or the PyTorch reference.

Every op takes ``use_triton``: ``"auto"`` (the kernel where it can run, else the PyTorch path; on a
CUDA device that cannot run it this is said once per process), ``"on"`` (the kernel, or one clear
error saying why it cannot run) or ``"off"`` (the PyTorch path). The Python values of before,
None / True / False, still mean auto / on / off here.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from typing import Any

import torch

TRITON_MODES = ("auto", "on", "off")

# Sizes the fused memory kernels compile for (tl.dot needs dims >= 16; head_dim 128 would need the
# d×d products blocked to fit shared memory). Other sizes run the PyTorch path.
MEMORY_KERNEL_HEAD_DIMS = (16, 32, 64)
MEMORY_KERNEL_CHUNKS = (16, 32, 64)


def triton_mode(use_triton: Any) -> str:
    """``use_triton`` as one of :data:`TRITON_MODES` (None, True, False: auto, on, off)."""
    if use_triton is None or isinstance(use_triton, bool):
        return {None: "auto", True: "on", False: "off"}[use_triton]
    if use_triton not in TRITON_MODES:
        raise ValueError(f"use_triton: got {use_triton!r}; allowed: {' | '.join(TRITON_MODES)}")
    return use_triton


def kernels_fit(x: torch.Tensor) -> bool:
    """Whether ``use_triton="auto"`` may run a kernel on ``x``'s device: CUDA, Ampere or newer (the
    kernels use tf32 matrix instructions; they were measured on Hopper), and Triton installed. The
    CPU runs the PyTorch reference; a CUDA device that cannot run the kernels says why, once."""
    if not x.is_cuda:
        return False
    index = x.device.index or 0
    if _capability(index) < (8, 0):
        note_fallback(f"CUDA device {index} has compute capability {_capability(index)}, below the kernels' 8.0")
        return False
    if not triton_available():
        note_fallback("Triton is not installed")
        return False
    return True


@lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def note_fallback(reason: str) -> None:
    """Say once per process (per reason) that ``use_triton="auto"`` runs the PyTorch path on CUDA:
    the device cannot run the kernels, or an op's shape or dtype is not one they compile for.
    Silent while torch.compile traces (Dynamo cannot trace ``warnings.warn``; a fullgraph compile
    would fail on it), and not counted as said then: the next eager call says it."""
    if not torch.compiler.is_compiling():
        _warn_once(reason)


@lru_cache(maxsize=None)
def _warn_once(reason: str) -> None:
    warnings.warn(f"use_triton='auto': {reason}; the PyTorch reference path runs (slower)", stacklevel=3)


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``import triton`` works (checked once per process). Only Triton's absence counts as
    "not available": any other error while importing it (a broken install) propagates, so that it
    is seen instead of silently running the slow path."""
    try:
        import triton  # noqa: F401  (imported only to see whether it can be)
    except ModuleNotFoundError as exc:
        if exc.name != "triton":
            raise
        return False
    return True


def require_kernels(x: torch.Tensor, op: str) -> None:
    """Raise a clear error when ``use_triton="on"`` asks ``op``'s kernels to run where they cannot:
    without Triton, or on CPU tensors outside Triton's interpreter (Triton's own error there is
    "0 active drivers")."""
    if not triton_available():
        raise RuntimeError(f"{op}: use_triton='on' but Triton is not installed; install it, or use "
                           "use_triton='auto' (the PyTorch path where the kernels cannot run)")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"{op}: use_triton='on' needs CUDA tensors, or TRITON_INTERPRET=1 (set before triton "
                           "is imported) to run the kernels in Triton's CPU interpreter; or use use_triton='auto'")
