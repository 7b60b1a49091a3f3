"""Phase 2, "Breath of Life": BK-Core with non-Hermitian forgetting, then the dissipative Hebbian
memory driven by the same Γ, then an MLP (DESIGN §3)::

    x ← x + Dropout(W_bk · BKFeatures(LN₁ x))      # V − iΓ; Γ returned for reuse
    x ← x + Dropout(Memory(LN₂ x, Γ))              # short conv → dissipative Hebbian memory
                                                    # + consolidation
    x ← x + FFN(LN₃ x)
"""

from __future__ import annotations

import torch
from torch import nn

from breath.layers.bk import BKCore
from breath.layers.ffn import FeedForward
from breath.layers.memory import HebbianMemory
from breath.models.config import ModelConfig
from breath.models.lm import CausalLM
from breath.ops.consolidation import ConsolidationConfig


class Phase2Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.bk = BKCore(cfg.d_model, cfg.num_heads, cfg.base_decay, causal=cfg.resolvent == "causal",
                         use_triton=cfg.use_triton, max_gamma=cfg.max_gamma)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.memory = HebbianMemory(cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.hebbian_eta,
                                    ConsolidationConfig.from_model(cfg), conv=cfg.memory_conv,
                                    key_shift=cfg.memory_key_shift, use_triton=cfg.use_triton)
        self.ln3 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pos: int, state: tuple | None, positions: torch.Tensor | None = None):
        g_prev, memory_state = (None, None) if state is None else state
        features, gamma, g_last = self.bk(self.ln1(x), g_prev)
        x = x + self.drop(features)
        read, memory_state, stats = self.memory(self.ln2(x), gamma, pos, memory_state)
        x = x + self.drop(read)
        x = x + self.ffn(self.ln3(x))
        return x, (g_last, memory_state), {"gamma": gamma, **stats}


class Phase2LM(CausalLM):
    residual_projections = ("bk.readout", "memory.out", "ffn.down")
    zeta_linears = ("bk.readout", "memory.qkv", "memory.out", "ffn.up", "ffn.down")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, [Phase2Block(cfg) for _ in range(cfg.n_layers)],
                         position_embedding=cfg.zeta_position_embedding)
        for block in self.blocks:
            block.bk.reset_forgetting()
