"""Phase 1 baseline: the static model — BK-Core with a Hermitian potential (Γ = 0) and no memory::

    x ← x + Dropout(W_bk · BKFeatures(LN₁ x))      # real potential V, bounded only by Im z
    x ← x + FFN(LN₂ x)
"""

from __future__ import annotations

import torch
from torch import nn

from breath.layers.bk import BKCore
from breath.layers.ffn import FeedForward
from breath.models.config import ModelConfig
from breath.models.lm import CausalLM


class Phase1Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.bk = BKCore(cfg.d_model, cfg.num_heads, cfg.base_decay, hermitian=True,
                         causal=cfg.resolvent == "causal", use_triton=cfg.use_triton)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pos: int, g_prev: torch.Tensor | None, positions: torch.Tensor | None = None):
        features, _, g_last = self.bk(self.ln1(x), g_prev)
        x = x + self.drop(features)
        x = x + self.ffn(self.ln2(x))
        return x, g_last, {}


class Phase1LM(CausalLM):
    residual_projections = ("bk.readout", "ffn.down")
    zeta_linears = ("bk.readout", "ffn.up", "ffn.down")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, [Phase1Block(cfg) for _ in range(cfg.n_layers)],
                         position_embedding=cfg.zeta_position_embedding)
