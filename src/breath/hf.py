"""Hugging Face ``transformers`` interoperability: every breath architecture as a ``PreTrainedModel``.

    import breath                                   # registers model_type "breath" with the Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("export-hf")       # breath export --format hf
    tokenizer = AutoTokenizer.from_pretrained("export-hf")
    ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
    text = tokenizer.decode(model.generate(ids, max_new_tokens=32, do_sample=False)[0])

``BreathForCausalLM`` holds the breath model that ``build_model`` makes from the config (phase2,
phase1 or transformer) and returns its logits in float32. ``generate()`` carries the model's own
``ModelState`` in a ``BreathCache``: the recurrent state (Green's functions and fast-weight
memories, constant in size) for phase2 and phase1, the KV cache for the transformer. The prompt is
read in one call, then one token per call, as ``breath generate`` does after its prefill.

This module needs ``transformers`` (``pip install 'breath[hf]'``); ``import breath`` registers it
only when ``transformers`` is first imported, so ``import breath`` does not pay for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

try:
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PretrainedConfig,
                              PreTrainedModel, PreTrainedTokenizerFast)
except ImportError as exc:  # the core install does not have it
    raise ImportError("breath.hf needs transformers: pip install 'breath[hf]'") from exc
import transformers
from packaging.version import Version

#: the oldest transformers this module works with (the hf extra's pin): older 5.x releases name
#: the output's cache ``past_key_values`` and fail deep inside generate()
TRANSFORMERS_VERSION = "5.25.0"
if Version(transformers.__version__) < Version(TRANSFORMERS_VERSION):
    raise ImportError(f"breath.hf needs transformers>={TRANSFORMERS_VERSION}, found {transformers.__version__}: "
                      "pip install 'breath[hf]'")

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from breath.data.tokenizer import EOT
from breath.layers.memory import HebbianMemory
from breath.layers.zeta import zeta_basis, zeta_zeros
from breath.models import CausalLM, ModelConfig, ModelState, build_model

MODEL_TYPE = "breath"
#: the code file an export carries so that ``trust_remote_code=True`` finds these classes where
#: ``import breath`` has not run (the ``lm_eval`` command line); it only imports this module
REMOTE_CODE_FILE = "modeling_breath.py"
AUTO_MAP = {"AutoConfig": "modeling_breath.BreathConfig", "AutoModel": "modeling_breath.BreathForCausalLM",
            "AutoModelForCausalLM": "modeling_breath.BreathForCausalLM"}


class BreathConfig(PretrainedConfig):
    """The ``ModelConfig`` fields as a ``PretrainedConfig`` (same names, same defaults).

    ``n_ctx`` repeats ``n_seq``, the training window, under the name ``lm_eval`` reads as its
    window (``max_length``), so ``loglikelihood_rolling`` cuts the windows ``breath eval`` does;
    the models themselves have no length cap. A full-resolvent model keeps no state to continue,
    so its ``use_cache`` is off and ``generate()`` re-reads the whole sequence for every token.
    """

    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        # A missing field takes ModelConfig's default, as save_pretrained leaves defaults out.
        cfg = ModelConfig(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(ModelConfig) if f.name in kwargs})
        for name, value in cfg.to_dict().items():
            setattr(self, name, value)
        kwargs.pop("n_ctx", None)  # derived: always n_seq
        self.n_ctx = cfg.n_seq
        self.use_cache = kwargs.pop("use_cache", cfg.resolvent == "causal")
        kwargs["tie_word_embeddings"] = True  # the LM head is the token embedding
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)})


class BreathCache(Cache):
    """breath's ``ModelState`` as a ``transformers`` cache.

    The state is not a list of per-layer key/value tensors (phase2/phase1 keep a fixed-size
    recurrent state), so this cache has no ``layers``: it holds the ``ModelState`` the last forward
    returned, and ``get_seq_length`` is the number of tokens it has read (``ModelState.pos``), which
    ``generate()`` uses to feed only the tokens the state has not seen.
    """

    def __init__(self, state: ModelState | None = None):
        super().__init__(layers=[])
        self.state = state

    def __repr__(self) -> str:
        return f"BreathCache(pos={self.get_seq_length()})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.state is None else self.state.pos

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no maximum

    def reset(self) -> None:
        self.state = None

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("BreathCache: beam search, assisted decoding and cache cropping are not supported "
                                  "(a recurrent state cannot be cropped or reordered here); use greedy or sampling")

    reorder_cache = crop = batch_repeat_interleave = batch_select_indices = _unsupported


class BreathForCausalLM(PreTrainedModel, GenerationMixin):
    """A breath model (``self.model``, from ``build_model``) behind the ``transformers`` API."""

    config_class = BreathConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}

    def __init__(self, config: BreathConfig):
        super().__init__(config)
        self.model = build_model(config.model_config())
        self.post_init()

    @classmethod
    def from_breath(cls, model: CausalLM) -> "BreathForCausalLM":
        """Wrap a copy of a built (or loaded) breath model's weights."""
        wrapper = cls(BreathConfig(**model.cfg.to_dict()))
        wrapper.model.load_state_dict(model.state_dict())
        return wrapper.eval()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward makes its own BreathCache: the state is not a key/value list

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        """``build_model`` initialises the parameters; this only refills the buffers that are
        functions of the config (not stored in the weights), which ``from_pretrained`` leaves empty
        after building the model on the meta device."""
        if isinstance(module, CausalLM) and module.pe_gain is not None:
            buffer, make = module.pe_gammas, lambda: zeta_zeros(module.cfg.d_model // 2)
        elif isinstance(module, HebbianMemory):
            buffer, make = module.basis, lambda: zeta_basis(module.head_dim)
        else:
            return
        if buffer.device.type != "meta":  # still on meta: filled on a later call, once materialised
            with torch.device(buffer.device):  # not the meta device from_pretrained may build under
                init.copy_(buffer, make())

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.head

    def forward(self, input_ids: torch.Tensor, cache: BreathCache | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, return_dict: bool | None = None) -> CausalLMOutputWithPast:
        """input_ids (B, T) → float32 logits (B, T, vocab), continuing ``cache`` (updated in place)
        when given. ``labels`` (B, T) give the mean next-token loss (``-100`` ignored). The output
        is always a ``CausalLMOutputWithPast`` (``return_dict`` is accepted for the callers that pass it)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask: breath models read every token (no padding mask); "
                             "allowed: all ones or None (pass one sequence, or sequences of equal length)")
        if cache is not None and not isinstance(cache, BreathCache):
            raise ValueError(f"cache: got {type(cache).__name__}; allowed: a BreathCache or None")
        if use_cache and self.model.cfg.resolvent != "causal":
            raise ValueError("use_cache: the full (non-causal) resolvent keeps no state to continue; "
                             "allowed: use_cache=False")
        out = self.model(input_ids, state=None if cache is None or cache.state is None else cache.state)
        logits = out.logits.float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten().to(logits.device))
        if use_cache:
            cache = cache if cache is not None else BreathCache()
            cache.state = out.state
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


def hf_tokenizer(tokenizer: Tokenizer | str | Path) -> PreTrainedTokenizerFast:
    """A run's byte-level BPE (a ``Tokenizer`` or its JSON file) as a ``PreTrainedTokenizerFast``:
    ``<|endoftext|>`` is its BOS and EOS (``lm_eval`` prefixes each text with it, as documents
    follow it in the training stream), and decoding leaves spaces as they are."""
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_file(str(tokenizer))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT,
                                   clean_up_tokenization_spaces=False)


def register() -> None:
    """Register ``model_type = "breath"`` with ``AutoConfig``, ``AutoModel`` and
    ``AutoModelForCausalLM`` (idempotent). ``AutoModel`` gives the same LM: breath has no headless model."""
    AutoConfig.register(MODEL_TYPE, BreathConfig, exist_ok=True)
    AutoModel.register(BreathConfig, BreathForCausalLM, exist_ok=True)
    AutoModelForCausalLM.register(BreathConfig, BreathForCausalLM, exist_ok=True)


register()
