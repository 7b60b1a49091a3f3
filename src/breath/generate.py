"""``breath generate``: stream text from a trained run.

    breath generate checkpoints/phase2 --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-p 0.95

The prompt is prefilled in chunks of the training window, then tokens come one at a time, each
step feeding only the new token with the state the previous step left: for phase2 and phase1 that
state is recurrent (Green's functions and fast-weight memories, constant in size however long the
output), for the transformer it is the KV cache (preallocated for prompt + new tokens). On CUDA
the steps replay CUDA graphs (:mod:`breath.decoding`). A model trained with the full (non-causal)
resolvent cannot continue a state, so it re-reads the whole sequence for every token.

Text goes to stdout as the tokens are produced. Tokens are byte-level BPE pieces, so one character
of UTF-8 may span several tokens: ``StreamDecoder`` turns tokens into bytes and emits only complete
characters. With a word tokenizer (``--tokenizer word``, ptb) words are joined by spaces and
``<eos>`` ends the line. Generation stops after ``--max-new-tokens`` tokens or at
``<|endoftext|>`` (the document separator of BPE training data).
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from tokenizers import Tokenizer
from torch import nn

from breath.data.tokenizer import EOS, EOT, is_word_level, separator_id
from breath.decoding import Decoder
from breath.errors import FieldError
from breath.models import ModelState
from breath.sampling import SamplingSettings, sample
from breath.runs import RUN_ARGUMENT, load_run
from breath.runtime import ConfigError, select_device


def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: character → the byte it stands for (GPT-2's mapping, which
    the ``tokenizers`` ByteLevel pre-tokenizer uses): printable bytes stand for themselves, the
    others are shifted to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(shifted)}}


class StreamDecoder:
    """Token ids in, text out, one token at a time: bytes are decoded incrementally, so a
    character split across tokens comes out whole once its last byte arrives. Special tokens
    (``<|endoftext|>``) decode to nothing, as ``Tokenizer.decode`` skips them.

    A word tokenizer's tokens are whole words: each comes with a space before it unless it starts
    a line (or ``after_space``: the text so far ends in whitespace), and ``<eos>`` is a newline, as
    ``Tokenizer.decode`` does."""

    def __init__(self, tokenizer: Tokenizer, after_space: bool = True):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.get_added_tokens_decoder())
        self.word_level = is_word_level(tokenizer)
        self.after_space = after_space
        self.alphabet = byte_level_alphabet()
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text that ``token`` completes (possibly empty)."""
        if token in self.special:
            return ""
        piece = self.tokenizer.id_to_token(token)
        if self.word_level:
            text = "\n" if piece == EOS else piece if self.after_space else " " + piece
            self.after_space = piece == EOS
            return text
        return self.utf8.decode(bytes(self.alphabet[char] for char in piece))

    def flush(self) -> str:
        """What is left at the end (an unfinished character becomes U+FFFD)."""
        return self.utf8.decode(b"", final=True)


@dataclass
class Step:
    token: int
    logits: torch.Tensor  # (V,) the logits the token was drawn from (on the CPU, in the model's dtype)
    # the state those logits came with (None: the full resolvent keeps none); the decoder's buffers,
    # valid until the next step
    state: ModelState | None


@torch.no_grad()
def generate(model: nn.Module, prompt: list[int], max_new_tokens: int, settings: SamplingSettings,
             generator: torch.Generator | None = None, stop_token: int | None = None,
             prefill_chunk: int | None = None, cuda_graphs: bool | None = None,
             compile: bool = False) -> Iterator[Step]:
    """Yield up to ``max_new_tokens`` tokens continuing ``prompt`` (a non-empty list of ids).

    The prompt is fed in chunks of ``prefill_chunk`` tokens (default: the training window), then
    one token per step through a :class:`~breath.decoding.Decoder` (CUDA graphs on CUDA unless
    ``cuda_graphs`` is False; its step torch.compiled with ``compile``). Sampling runs on the CPU
    with ``generator``, so a seed gives the same text on any device (for the same logits). Stops
    after ``stop_token``.
    """
    if not prompt:
        raise ValueError("prompt: empty; allowed: at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    recurrent = model.cfg.resolvent == "causal"
    state = decoder = None
    if recurrent:
        for chunk in ids.split(prefill_chunk or model.cfg.n_seq, dim=1):
            out = model(chunk, state=state)
            state = out.state
        decoder = Decoder(model, state, capacity=len(prompt) + max_new_tokens, cuda_graphs=cuda_graphs,
                          compile=compile)
        logits = out.logits[0, -1].cpu()
    for step in range(max_new_tokens):
        if not recurrent:  # the full resolvent: every step re-reads the whole sequence
            logits = model(ids).logits[0, -1].cpu()
        token = sample(logits[None], settings, generator)
        yield Step(int(token), logits, decoder.state if recurrent else None)
        if int(token) == stop_token or step == max_new_tokens - 1:
            return
        token = token.to(device)[None]
        if recurrent:
            logits = decoder.step(token)[0, -1].cpu()
        else:
            ids = torch.cat((ids, token), dim=1)


# ------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar=RUN_ARGUMENT,
                        help="a run's output directory (its best_model.pt) or a checkpoint file")
    parser.add_argument("--prompt", required=True, help='text to continue ("" starts a new document)')
    parser.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                        help="tokens to generate at most (default: 200)")
    parser.add_argument("--temperature", type=float, default=1.0, metavar="T",
                        help="softmax temperature; 0 is greedy (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K",
                        help="sample among the K most probable tokens (default: all)")
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P",
                        help="sample from the smallest set of tokens with probability >= P (default: 1.0, off)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default: 0)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decoding step: fewer, fused kernels per token, after a compilation "
                             "of about a minute per kind of step (two for phase2) on a GPU")


def run(options: dict[str, Any]) -> None:
    """``breath generate``: check the options, load the run, stream the continuation to stdout."""
    settings = SamplingSettings(options["temperature"], options["top_k"], options["top_p"])
    try:
        settings.validate()
    except FieldError as exc:
        raise ConfigError.from_field(exc) from None
    if options["max_new_tokens"] < 1:
        raise ConfigError("--max-new-tokens", f"got {options['max_new_tokens']}; allowed: an integer >= 1")
    if not 0 <= options["seed"] < 2**63:
        raise ConfigError("--seed", f"got {options['seed']}; allowed: an integer in [0, 2**63)")
    device = select_device(options["device"])
    loaded = load_run(options["run"])
    model = loaded.model.to(device)
    tokenizer = loaded.tokenizer
    eot = tokenizer.token_to_id(EOT)  # None for a word tokenizer: it does not stop at a line end
    # An empty prompt starts a new document: in the training data the separator (<|endoftext|>,
    # <eos> for words) comes before every document but the first.
    prompt = tokenizer.encode(options["prompt"]).ids or [separator_id(tokenizer)]
    if model.cfg.resolvent != "causal":
        print(f"note: {loaded.checkpoint_path} uses the full (non-causal) resolvent, which cannot continue "
              "a state: every token re-reads the whole sequence"
              f"{' (no decoding step, so --compile has nothing to compile)' if options['compile'] else ''}",
              file=sys.stderr)

    generator = torch.Generator().manual_seed(options["seed"])
    decoder = StreamDecoder(tokenizer, after_space=options["prompt"][-1:].isspace() or not options["prompt"])
    sys.stdout.write(options["prompt"])
    sys.stdout.flush()
    started, count = time.perf_counter(), 0
    for step in generate(model, prompt, options["max_new_tokens"], settings, generator, stop_token=eot,
                         compile=options["compile"]):
        count += 1
        sys.stdout.write(decoder.push(step.token))
        sys.stdout.flush()
    sys.stdout.write(decoder.flush() + "\n")
    sys.stdout.flush()
    elapsed = time.perf_counter() - started
    stepped = model.cfg.resolvent == "causal"
    graphs, compiled = stepped and device.type == "cuda", stepped and options["compile"]
    notes = [f"{count} tokens in {elapsed:.2f} s ({count / max(elapsed, 1e-9):.1f} tokens/s, "
             f"{'compiled ' if compiled else ''}{'CUDA-graph' if graphs else 'eager'} steps"
             f"{', compilation included' if compiled else ''})"]
    if step.state is not None:
        notes.append(f"state {step.state.nbytes() / 2**10:.1f} KiB")
    if step.token == eot:
        notes.append("stopped at <|endoftext|>")
    print(f"[{', '.join(notes)}]", file=sys.stderr)
