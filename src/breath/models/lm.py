"""The language-model shell shared by every architecture (nanoGPT-style).

token embedding (+ zeta position embedding) → blocks → final LayerNorm → LM head (tied to the
embedding). Architectures differ only in their block; each block maps
``(x, pos, layer_state, positions) → (x, new_layer_state, layer_stats)``, where ``pos`` is the host
int of the first token's absolute position and ``positions`` None or the (T,) device tensor of all
of them (see :meth:`CausalLM.forward`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from breath.layers.zeta import zeta_init_, zeta_position_embedding, zeta_zeros
from breath.models.config import ModelConfig
from breath.models.diagnostics import summarize
from breath.models.output import ModelOutput, ModelState

INIT_STD = 0.02


class CausalLM(nn.Module):
    #: names of each block's residual-output projections (scaled down at init, GPT-2 style)
    residual_projections: tuple[str, ...] = ()
    #: names of each block's Linear layers that get the zeta singular-value profile
    zeta_linears: tuple[str, ...] = ()

    def __init__(self, cfg: ModelConfig, blocks: list[nn.Module], position_embedding: bool):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # PE entries are O(1) while embeddings start at std 0.02: a learned gain sets the balance.
        self.pe_gain = nn.Parameter(torch.tensor(INIT_STD)) if position_embedding else None
        if position_embedding:
            # Built once (float64, a deterministic function of d_model): no host copy per forward.
            self.register_buffer("pe_gammas", zeta_zeros(cfg.d_model // 2), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual_std = INIT_STD / math.sqrt(len(self.residual_projections) * len(self.blocks))
        for block in self.blocks:
            for name in self.residual_projections:
                nn.init.normal_(block.get_submodule(name).weight, std=residual_std)
            if self.cfg.zeta_init:
                for name in self.zeta_linears:
                    zeta_init_(block.get_submodule(name).weight)

    def forward(self, input_ids: torch.Tensor, state: ModelState | None = None,
                return_diagnostics: bool = False, positions: torch.Tensor | None = None) -> ModelOutput:
        """input_ids (B, T) → logits (B, T, vocab); ``state`` continues an earlier call.

        ``positions``: the tokens' absolute positions as a (T,) int64 tensor on the model's device
        (default: ``arange(state.pos, state.pos + T)``, built here when needed). A CUDA-graph decode
        step (:mod:`breath.decoding`) passes it so that every position-dependent value (position
        embedding, rotary angles, KV-cache slots) is read from device memory and one captured step
        replays at any position; ``state.pos`` then decides only host control flow (where the
        memory consolidates), so a replay must have the chunk phase of the capture.
        """
        pos = 0 if state is None else state.pos
        x = self.embed(input_ids)
        if self.pe_gain is not None:
            if positions is None:
                positions = torch.arange(pos, pos + input_ids.shape[1], device=input_ids.device)
            x = x + self.pe_gain * zeta_position_embedding(positions, self.pe_gammas).to(x.dtype)
        x = self.drop(x)
        new_layers, layer_stats = [], []
        for i, block in enumerate(self.blocks):
            x, layer_state, stats = block(x, pos, None if state is None else state.layers[i], positions)
            new_layers.append(layer_state)
            layer_stats.append(stats)
        logits = self.head(self.ln_f(x))
        diagnostics = summarize(layer_stats) if return_diagnostics else {}
        return ModelOutput(logits, ModelState(pos + input_ids.shape[1], tuple(new_layers)), diagnostics)

    def reserve(self, state: ModelState, capacity: int) -> ModelState:
        """``state`` ready to be continued up to ``capacity`` tokens in all without reallocating.
        Recurrent states have a constant size: this returns them as they are (the transformer's
        KV cache overrides it)."""
        return state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
