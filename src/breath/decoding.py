"""Fast decoding: one-token steps on static state buffers, replayed from CUDA graphs.

    decoder = Decoder(model, prefill_state, capacity=len(prompt) + max_new_tokens)
    logits = decoder.step(token)          # token (B, 1) → logits (B, 1, V); decoder.state continues

A recurrent model's state has a constant size, so every new token costs the same small amount of
GPU work at any context; an eager phase2 step, though, dispatches some 600 small operators, and
their host time is the step's time. So (the approach of mamba's ``cg=True`` generation):

* Static buffers. The prefill state's tensors become the decoder's buffers (the transformer's KV
  cache first gets room for ``capacity`` tokens, :meth:`~breath.models.lm.CausalLM.reserve`). A
  step runs the model on them and copies the new state back into them, leaf by leaf: the decoder
  never looks inside the state, whose layout is each layer's business.
* Position on the device. A (1,) int64 tensor holds the token's absolute position; the model reads
  every position-dependent value from it (``positions`` of ``CausalLM.forward``: position
  embedding, rotary angles, KV-cache slot and length mask) and the step advances it in place.
* Two kinds of step. The host counts positions too, and that count decides host control flow: the
  memory consolidates after the token at p with (p + 1) % memory_chunk == 0, a different sequence of
  kernels. phase2 therefore has an ordinary and a boundary step (one kind only with
  ``--no-consolidation``, whose boundaries do nothing); each runs the model with the host
  position of its first use, and a later step of its kind only changes the position tensor. That is
  exact: for a single token the memory op depends on the host position only through whether it ends
  a chunk (``tests/test_decoding.py`` checks it against plain calls across several boundaries).
* Graphs (CUDA). Each kind of step is captured into a CUDA graph the first time it is needed, after
  two warm-up runs on a side stream (Triton kernels compile and the allocator settles there, outside
  any timed region); the graphs share one memory pool. A replay is a token copy and one graph launch.
  The capture records the autocast setting in force at that first step.
* Weights cast once. Under autocast every matmul casts its float32 weight (and bias) to the
  autocast dtype, in every step: some 40 small kernels and, at the base preset, ~150 MB of memory
  traffic a token. The decoder makes those low-precision copies of the nn.Linear weights and biases
  once, at the first step under each autocast setting, and runs the model on them
  (``torch.func.functional_call``); autocast then finds them already cast. The numbers are the same
  bit for bit (autocast's cast is the same ``.to``). The copies are a snapshot: a decoder does not
  see later changes to the weights.
* One copy-back. The new state's leaves are written into the buffers by one multi-tensor copy
  (``torch._foreach_copy_``), not one kernel per leaf.
* Compiled steps (``compile=True``). Even replayed from a graph, a step is a few hundred small
  kernels (casts, norms, the state's glue), each with its own launch latency on the GPU. With
  ``compile`` the model call is ``torch.compile``d (``fullgraph``, static shapes) before it is
  captured, so inductor fuses that glue. Each kind of step compiles once (its host position is a
  constant of the graph); the first step of each kind pays the compilation. The logits agree with
  the uncompiled step to rounding, not bit for bit (fused kernels round in another order).

On the CPU (or with ``cuda_graphs=False``) the same step runs eagerly on the same buffers, with the
same frozen host positions, so the CPU tests check exactly what a graph replays.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_flatten, tree_unflatten

from breath.models.lm import CausalLM
from breath.models.output import ModelOutput, ModelState


def _run_model(model: CausalLM, token: Tensor, state: ModelState, positions: Tensor,
               weights: dict[str, Tensor]) -> ModelOutput:
    """The model's step on ``weights`` in place of its own parameters of those names (none: its own);
    what ``compile=True`` compiles."""
    if not weights:
        return model(token, state=state, positions=positions)
    # tie_weights=False: the LM head's weight is the embedding's, and only the head's use is cast
    return functional_call(model, weights, (token,), dict(state=state, positions=positions),
                           tie_weights=False, strict=False)


class Decoder:
    """One-token decoding steps continuing ``state`` (the prefill's), up to ``capacity`` tokens in
    all (prompt included).

    Takes over ``state``'s tensors: they are updated in place (pass a copy to keep the original).
    ``cuda_graphs``: None (default) replays CUDA graphs on CUDA and runs eagerly elsewhere; True
    requires CUDA; False always runs eagerly. ``compile``: torch.compile the step (see above). The logits a step returns, and :attr:`state`, are
    the decoder's buffers: read them before the next step. :attr:`pos` is the next token's position.
    """

    def __init__(self, model: CausalLM, state: ModelState, capacity: int, cuda_graphs: bool | None = None,
                 compile: bool = False):
        if model.cfg.resolvent != "causal":
            raise ValueError("Decoder: resolvent='full' cannot continue a state; allowed: resolvent='causal'")
        if capacity <= state.pos:
            raise ValueError(f"capacity: got {capacity}; allowed: more than the {state.pos} tokens of the state")
        device = next(model.parameters()).device
        if cuda_graphs is None:
            cuda_graphs = device.type == "cuda"
        elif cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs: got True for a model on {device}; allowed: False or None "
                             "(CUDA graphs need a CUDA device)")
        self.model, self.capacity, self.cuda_graphs = model, capacity, cuda_graphs
        self.pos = state.pos  # the host's count of the position tensor
        leaves, self._spec = tree_flatten(model.reserve(state, capacity).layers)
        # A step writes each leaf in place, so leaves sharing memory (e.g. two fields of an empty
        # memory state that are one zeros tensor) get their own copies.
        seen: set[int] = set()
        self._buffers = []
        for leaf in leaves:  # tensors, and None for the absent parts of a layer's state
            if isinstance(leaf, Tensor):
                pointer = leaf.untyped_storage().data_ptr()
                leaf = leaf.clone() if pointer in seen else leaf
                seen.add(pointer)
            self._buffers.append(leaf)
        self._token: Tensor | None = None  # the step's input, allocated by the first step
        self._position = torch.tensor([state.pos], device=device)
        # the memory's chunk: its last token is the boundary step (consolidation); without
        # consolidation every step is the same
        consolidates = model.cfg.arch == "phase2" and model.cfg.consolidation
        self._chunk = model.cfg.memory_chunk if consolidates else None
        self._host_pos: dict[bool, int] = {}  # kind of step (boundary?) → the host position it runs with
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, Tensor]] = {}  # kind → (graph, its logits)
        self._pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
        self._device_type = device.type
        self._casts: dict[torch.dtype, dict[str, Tensor]] = {}  # autocast dtype → the Linear weights cast to it
        self._run = torch.compile(_run_model, fullgraph=True, dynamic=False) if compile else _run_model

    @property
    def state(self) -> ModelState:
        """The state after the last step (the decoder's buffers)."""
        return ModelState(self.pos, tree_unflatten(self._buffers, self._spec))

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """token ids (B, 1) at position :attr:`pos` → logits (B, 1, V) for the next token."""
        if self.pos >= self.capacity:
            raise ValueError(f"capacity: the decoder was built for {self.capacity} tokens and all are used; "
                             "allowed: a larger capacity")
        boundary = self._chunk is not None and (self.pos + 1) % self._chunk == 0
        host_pos = self._host_pos.setdefault(boundary, self.pos)
        if self._token is None:
            self._token = torch.empty_like(token)
        self._token.copy_(token)
        if not self.cuda_graphs:
            logits = self._commit(self._compute(host_pos))
        else:
            if boundary not in self._graphs:
                self._graphs[boundary] = self._capture(host_pos)
            graph, logits = self._graphs[boundary]
            graph.replay()
        self.pos += 1
        return logits

    def _compute(self, host_pos: int) -> ModelOutput:
        """The model on the buffers; changes nothing but the transformer's cache slot at the position
        (which the step would write with the same values)."""
        state = ModelState(host_pos, tree_unflatten(self._buffers, self._spec))
        autocast = torch.is_autocast_enabled(self._device_type)
        weights = self._cast_weights(torch.get_autocast_dtype(self._device_type)) if autocast else {}
        return self._run(self.model, self._token, state, self._position, weights)

    def _cast_weights(self, dtype: torch.dtype) -> dict[str, Tensor]:
        """The nn.Linear weights and biases as autocast would cast them for a matmul, made once
        (autocast leaves float64 alone, and so does this)."""
        if dtype not in self._casts:
            self._casts[dtype] = {f"{name}.{kind}": tensor.detach().to(dtype)
                                  for name, module in self.model.named_modules() if isinstance(module, nn.Linear)
                                  for kind, tensor in (("weight", module.weight), ("bias", module.bias))
                                  if tensor is not None and tensor.dtype in (torch.float32, torch.float16, torch.bfloat16)}
        return self._casts[dtype]

    def _commit(self, out: ModelOutput) -> Tensor:
        """Copy the new state into the buffers and advance the position tensor."""
        leaves, spec = tree_flatten(out.state.layers)
        if spec != self._spec or any((leaf is None) != (buffer is None) for leaf, buffer in zip(leaves, self._buffers)):
            raise RuntimeError(f"Decoder: a step changed the state's structure from {self._spec} to {spec}")
        pairs = [(buffer, leaf) for buffer, leaf in zip(self._buffers, leaves)
                 if leaf is not buffer and leaf is not None]  # the KV cache is written in place already
        for buffer, leaf in pairs:
            if leaf.shape != buffer.shape or leaf.dtype != buffer.dtype:
                raise RuntimeError(f"Decoder: a step returned a state tensor {tuple(leaf.shape)} {leaf.dtype} for a "
                                   f"buffer {tuple(buffer.shape)} {buffer.dtype}: run the prefill and the steps "
                                   "under the same autocast setting")
        if pairs:
            torch._foreach_copy_([buffer for buffer, _ in pairs], [leaf for _, leaf in pairs])
        self._position.add_(1)
        return out.logits

    def _capture(self, host_pos: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """A CUDA graph of one step (compute and commit) at ``host_pos``'s kind, and its logits."""
        # Autocast's cache of cast weights is freed when the caller's autocast block ends, and a
        # graph that read it would replay on freed memory: the capture runs without it, and reads the
        # decoder's own cast weights, made by the first warm-up run (outside the capture).
        autocast = torch.autocast("cuda", torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda"),
                                  cache_enabled=False)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast:
            for _ in range(2):  # warm-up: compiles kernels; nothing is committed
                self._compute(host_pos)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), autocast:
            logits = self._commit(self._compute(host_pos))
        return graph, logits
