"""Choosing the next token from a model's logits: greedy, temperature, top-k, top-p (nucleus).

    settings = SamplingSettings(temperature=0.8, top_k=50, top_p=0.95)
    token = sample(logits, settings, generator)          # logits (B, V) -> token ids (B,)

The order is the usual one: divide by the temperature, keep the top-k logits, keep the nucleus of
the remaining distribution, renormalise, draw. Temperature 0 is greedy (argmax; k and p do not
matter). Draws use the caller's ``torch.Generator``, so a seed fixes the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from breath.errors import FieldError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # None: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut

    def validate(self) -> "SamplingSettings":
        """Raise ``FieldError(field, "got ...; allowed: ...")`` for the first bad field."""
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise FieldError("temperature", f"got {self.temperature!r}; allowed: a finite number >= 0 (0: greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise FieldError("top_k", f"got {self.top_k!r}; allowed: an integer >= 1 (leave it out for no top-k)")
        if not 0 < self.top_p <= 1:  # also refuses NaN
            raise FieldError("top_p", f"got {self.top_p!r}; allowed: a number in (0, 1] (1: no nucleus cut)")
        return self


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``logits`` with everything below the k-th largest value of each row set to -inf (ties with
    the k-th value are kept; k beyond the vocabulary keeps everything)."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_mask(logits: torch.Tensor, p: float) -> torch.Tensor:
    """``logits`` with everything outside the nucleus set to -inf: the nucleus is the smallest set
    of most probable tokens whose probability reaches ``p`` (the top token is always in it)."""
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def sample(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Next token ids (B,) for ``logits`` (B, V) under ``settings`` (validated by the caller)."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / settings.temperature
    if settings.top_k is not None:
        logits = top_k_mask(logits, settings.top_k)
    logits = top_p_mask(logits, settings.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
