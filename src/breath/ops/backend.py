"""Which implementation an op runs: the Triton kernel or the PyTorch reference."""

from __future__ import annotations

from functools import lru_cache

# Sizes the fused memory kernels compile for (tl.dot needs dims >= 16; head_dim 128 would need the
# d×d products blocked to fit shared memory). Other sizes run the PyTorch path.
MEMORY_KERNEL_HEAD_DIMS = (16, 32, 64)
MEMORY_KERNEL_CHUNKS = (16, 32, 64)


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``import triton`` works (checked once per process)."""
    try:
        import triton  # noqa: F401
    except Exception:  # an unusable install can fail with more than ImportError
        return False
    return True
