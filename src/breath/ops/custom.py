"""One wiring of a Triton op into autograd and ``torch.compile``, shared by the BK, short-conv and
memory kernels.

Compiled graphs need a ``torch.library`` custom op (one opaque node per call, with a fake
implementation for shapes, and its backward another custom op), while in eager mode the custom op's
Python dispatch costs several times an ``autograd.Function``'s host time per call (measured on CPU:
~300 µs vs ~100 µs for forward + backward), which eager training pays once per layer. So both are
built over the same launchers and :meth:`TritonOp.__call__` picks by ``torch.compiler.is_compiling()``.
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from typing import Any, Callable

import torch


class TritonOp:
    """``breath::<name>_fwd`` and ``breath::<name>_bwd`` custom ops and the equivalent autograd.Function.

    Args:
        name: op name (the custom ops are ``breath::<name>_fwd`` and ``breath::<name>_bwd``).
        forward, backward: the launchers, with annotated tensor/scalar parameters (the custom ops'
            schemas are inferred from them).
        forward_fake, backward_fake: their output shapes, for tracing.
        setup_context: ``(ctx, inputs, output)``; ``inputs`` is a namedtuple of ``forward``'s
            parameters, so it reads them by name.
        gradients: ``(ctx, backward, *output_grads)`` → a dict from ``forward``'s parameter names to
            their gradients (absent names get None), ``backward`` the backward op or launcher.
    """

    def __init__(self, name: str, forward: Callable, backward: Callable, *, forward_fake: Callable,
                 backward_fake: Callable, setup_context: Callable, gradients: Callable):
        # Gradient slots in forward's parameter order, filled by name (None where not given).
        names = list(inspect.signature(forward).parameters)
        Inputs = namedtuple(f"{name}_inputs", names, defaults=(None,) * len(names))

        def setup(ctx, inputs, output):
            setup_context(ctx, Inputs(*inputs), output)

        self.forward_op = torch.library.custom_op(f"breath::{name}_fwd", forward, mutates_args=())
        self.forward_op.register_fake(forward_fake)
        self.backward_op = torch.library.custom_op(f"breath::{name}_bwd", backward, mutates_args=())
        self.backward_op.register_fake(backward_fake)
        self.forward_op.register_autograd(
            lambda ctx, *grads: tuple(Inputs(**gradients(ctx, self.backward_op, *grads))), setup_context=setup)

        class Function(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *inputs):
                output = forward(*inputs)
                setup_context(ctx, Inputs(*inputs), output)
                return output

            @staticmethod
            def backward(ctx, *grads):
                # Grad mode is on here only under create_graph=True. (A check, not once_differentiable:
                # its wrapper costs ~12 µs per call, measured on CPU.)
                if torch.is_grad_enabled():
                    raise RuntimeError(f"{name}: the Triton backward is not differentiable (no double backward); "
                                       "use the PyTorch reference (use_triton=False) for higher-order gradients")
                return Inputs(**gradients(ctx, backward, *grads))

        Function.__name__ = Function.__qualname__ = f"{name}_function"
        self.function = Function

    def __call__(self, *inputs: Any) -> Any:
        # torch.compile traces the custom op (one opaque node, no graph break); eager calls the Function.
        if torch.compiler.is_compiling():
            return self.forward_op(*inputs)
        return self.function.apply(*inputs)
