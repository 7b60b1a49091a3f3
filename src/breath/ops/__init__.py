"""Ops: tensors in, tensors out. Each has a plain PyTorch reference (the ground truth) beside its
fast path; Triton kernels are selected by ``use_triton``."""

from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference

__all__ = ["bk_resolvent", "bk_resolvent_reference"]
