"""The strongest plain GPT we write in PyTorch: the speed reference of ``throughput.py``'s training table.

nanoGPT-style, at a preset's sizes (d_model, n_layers, heads × head_dim, ffn_dim, vocabulary)::

    x ← embed(ids) + learned_position(t)
    x ← x + W_o SDPA_causal(split(W_qkv LN₁ x))      (fused qkv, flash attention, is_causal=True)
    x ← x + W₂ GELU(W₁ LN₂ x)
    logits = W_embedᵀ LN_f x                          (tied head)

No dropout, no biases in the linear layers, nothing but what a training step needs: the fastest
honest GPT to hold ``--arch transformer`` (rotary, biases, the shared LM shell) against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from breath import ModelConfig


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.num_heads * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        # (B, T, 3, H, d) → three (B, H, T, d) views; unbind's backward is one stack
        q, k, v = self.qkv(self.ln1(x)).view(batch, length, 3, self.heads, self.head_dim).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, length, -1))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class PlainGPT(nn.Module):
    """ids (B, T ≤ max_length) → logits (B, T, vocab)."""

    def __init__(self, cfg: ModelConfig, max_length: int):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position = nn.Embedding(max_length, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual outputs scaled by 1/√(2 L)
                std = 0.02 / (2 * cfg.n_layers) ** 0.5 if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
