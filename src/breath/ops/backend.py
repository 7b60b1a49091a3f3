"""Which implementation an op runs: the Triton kernel or the PyTorch reference."""

from __future__ import annotations

import os
from functools import lru_cache

import torch

# Sizes the fused memory kernels compile for (tl.dot needs dims >= 16; head_dim 128 would need the
# d×d products blocked to fit shared memory). Other sizes run the PyTorch path.
MEMORY_KERNEL_HEAD_DIMS = (16, 32, 64)
MEMORY_KERNEL_CHUNKS = (16, 32, 64)


def kernels_fit(x: torch.Tensor) -> bool:
    """Whether the automatic choice (``use_triton=None``) may run a kernel on ``x``'s device: CUDA,
    Ampere or newer (the kernels use tf32 matrix instructions; they were measured on Hopper), and
    Triton importable. Older GPUs and the CPU run the PyTorch reference."""
    return x.is_cuda and _capability(x.device.index or 0) >= (8, 0) and triton_available()


@lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``import triton`` works (checked once per process)."""
    try:
        import triton  # noqa: F401  (imported only to see whether it can be)
    except Exception:  # an unusable install can fail with more than ImportError
        return False
    return True


def require_kernels(x: torch.Tensor, op: str) -> None:
    """Raise a clear error when ``use_triton=True`` asks ``op``'s kernels to run where they cannot:
    without Triton, or on CPU tensors outside Triton's interpreter (Triton's own error there is
    "0 active drivers")."""
    if not triton_available():
        raise RuntimeError(f"{op}: use_triton=True but `import triton` fails")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"{op}: use_triton=True needs CUDA tensors, or TRITON_INTERPRET=1 (set before triton "
                           "is imported) to run the kernels in Triton's CPU interpreter")
