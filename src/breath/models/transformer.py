"""Transformer baseline: GPT-style pre-norm blocks of causal softmax attention (rotary positions,
``scaled_dot_product_attention``) and a GELU MLP, at the same width and depth as Phase 2::

    x ← x + Dropout(Attention(LN₁ x))
    x ← x + FFN(LN₂ x)

Its state is the KV cache, so ``model(next_ids, state=out.state)`` continues a sequence like the
other architectures. The cache is preallocated and written in place (see
:class:`~breath.layers.attention.CausalSelfAttention`); :meth:`TransformerLM.reserve` sizes it for
a whole generation up front. No zeta init or zeta position embedding: it is the standard recipe.
"""

from __future__ import annotations

import torch
from torch import nn

from breath.layers.attention import CausalSelfAttention, reserve_cache
from breath.layers.ffn import FeedForward
from breath.models.config import ModelConfig
from breath.models.lm import CausalLM
from breath.models.output import ModelState


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.dropout,
                                         use_triton=cfg.use_triton)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pos: int, cache: tuple | None, positions: torch.Tensor | None = None):
        y, cache = self.attn(self.ln1(x), pos, cache, positions)
        x = x + self.drop(y)
        x = x + self.ffn(self.ln2(x))
        return x, cache, {}


class TransformerLM(CausalLM):
    residual_projections = ("attn.out", "ffn.down")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, [TransformerBlock(cfg) for _ in range(cfg.n_layers)],
                         position_embedding=False)

    def reserve(self, state: ModelState, capacity: int) -> ModelState:
        """The KV caches of ``state`` in buffers of ``capacity`` positions (one copy, now): every
        later token is then written in place, with no reallocation, up to ``capacity``. Caches that
        already hold ``capacity`` positions are returned as they are (shared, like any continuation
        of them): a second copy would double the largest allocation of long-context decoding."""
        if capacity >= state.pos and all(keys.shape[2] >= capacity for keys, _ in state.layers):
            return state
        return ModelState(state.pos, tuple(reserve_cache(cache, state.pos, capacity) for cache in state.layers))
