"""``breath eval``: loss and perplexity of a trained run on a split of a corpus, by position too.

    breath eval checkpoints/phase2 --split test
    breath eval checkpoints/phase2/checkpoint_epoch3.pt --dataset brown --n-seq 2048

The split is encoded with the run's own tokenizer (``tokenizer.json`` next to the checkpoint) and
cut into packed windows as in training (``--n-seq`` may exceed the training window: no model has a
length cap). Every window starts from an empty state, so position p of a window sees p tokens of
context, and the loss at each position, averaged over the windows, shows whether the model keeps
using longer context. Writes ``eval_<split>.json`` (the numbers) and ``eval_<split>.png`` (the loss
by position) next to the checkpoint, or ``--output FILE.json`` and the PNG beside it.

``--stride S`` evaluates as published language-model results do instead: overlapping windows, one
every S tokens, each scoring only the labels no earlier window scored (``StridedWindows``), so
every label but the first window's is predicted from at least n_seq − S tokens of context. It reads
n_seq / S times more tokens and gives no loss by position.

Besides the token perplexity it reports the per-word perplexity, which compares across tokenizers
and with published results: exp(total loss of the split / words of the split), with words counted
as on the Penn Treebank (whitespace-separated words plus one ``<eos>`` per line end, see
``count_words``). The total loss is the mean token loss of the evaluated windows times the
split's tokens. With the word tokenizer (one token per word and line end) the two perplexities
are the same; on ptb that is the number the literature reports.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from breath import plots
from breath.data.corpora import DataError, SPLITS, count_words, load_corpus, split_documents
from breath.data.windows import StridedWindows, WindowDataset, encode_split, make_loader
from breath.io import atomic_write_json, prepare_output_dir
from breath.loss import perplexity, position_loss_sums
from breath.models.config import RESOLVENTS
from breath.runs import RUN_ARGUMENT, Run, load_run
from breath.runtime import ConfigError, say, select_device


@dataclass
class EvalResult:
    windows: int
    n_seq: int
    tokens: int  # labels scored
    loss: float  # their mean loss
    position_loss: list[float] | None  # mean loss at each position of the window (packed windows only)


def evaluate(model: nn.Module, windows: WindowDataset | StridedWindows, batch_size: int,
             num_batches: int | None = None) -> EvalResult:
    """Cross-entropy of ``model`` on ``windows`` (in order), as the trainer's validation computes it
    (``breath.loss``: fp32); the first ``num_batches`` batches only when given. Packed windows also
    give the loss at each position; strided ones score each label once (their ignored labels add 0
    to the sums, so the sums are the scored labels' losses)."""
    model.eval()
    device = next(model.parameters()).device
    loader = make_loader(windows, batch_size, shuffle=False, drop_last=False)
    sums, count = position_loss_sums(model, loader, device, num_batches)
    if isinstance(windows, StridedWindows):
        scored = windows.n_seq + (count - 1) * windows.stride
        return EvalResult(count, windows.n_seq, scored, sums.sum().item() / scored, None)
    position_loss = (sums / count).tolist()
    return EvalResult(count, windows.n_seq, count * windows.n_seq, math.fsum(position_loss) / windows.n_seq,
                      position_loss)


def position_bands(position_loss: list[float]) -> list[tuple[int, int, float]]:
    """Mean loss over the positions 1, 2–3, 4–7, 8–15, ... (1-based, the last band cut at the end):
    ``(first, last, mean)`` per band, so a fall with context length reads at a glance."""
    bands, first = [], 1
    while first <= len(position_loss):
        last = min(2 * first - 1, len(position_loss))
        bands.append((first, last, math.fsum(position_loss[first - 1:last]) / (last - first + 1)))
        first *= 2
    return bands


def word_perplexity(loss: float, tokens: int, words: int) -> float:
    """exp(loss · tokens / words): the perplexity per word of a text of ``words`` words that the
    tokenizer cuts into ``tokens`` tokens, at a mean loss of ``loss`` nats per token."""
    return perplexity(loss * tokens / words)


def split_tokens(loaded: Run, dataset: str, split: str, cache_dir: str | None) -> tuple[torch.Tensor, int]:
    """``split`` of ``dataset`` encoded with the run's tokenizer (cached like training's tokens),
    and its number of words (``count_words``)."""
    try:
        corpus = load_corpus(dataset, cache_dir)
    except DataError as exc:
        raise ConfigError("--dataset", str(exc)) from None
    documents = split_documents(corpus)[split]
    # The vocabulary size only names the cache file; its name also carries the tokenizer's hash.
    vocab_size = loaded.train_options["vocab_size"]
    tokens = encode_split(loaded.tokenizer, corpus, vocab_size, split, documents, cache_dir)
    return tokens, sum(count_words(doc.text) for doc in documents)


def default_output(loaded: Run, dataset: str, split: str, resolvent: str | None) -> Path:
    """``eval_<split>.json`` next to the checkpoint; another dataset or resolvent than the run's
    adds to the name, so those results do not overwrite the plain ones."""
    stem = f"eval_{split}"
    if dataset != loaded.train_options["dataset"]:
        stem += "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", Path(dataset).name or dataset)
    if resolvent is not None and resolvent != loaded.checkpoint["config"]["model"]["resolvent"]:
        stem += f"_{resolvent}-resolvent"
    return loaded.directory / f"{stem}.json"


# ------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar=RUN_ARGUMENT,
                        help="a run's output directory (its best_model.pt) or a checkpoint file")
    parser.add_argument("--dataset", help="corpus to evaluate on, as breath train's --dataset (default: the run's)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split of the corpus (default: test)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="windows per batch (default: the run's)")
    parser.add_argument("--num-batches", type=int, metavar="N", help="evaluate this many batches (default: all)")
    parser.add_argument("--n-seq", type=int, metavar="N",
                        help="tokens per window; may exceed the training window (default: the run's)")
    parser.add_argument("--stride", type=int, metavar="S",
                        help="sliding windows: one every S tokens (1 ≤ S ≤ n_seq), each scoring only its last "
                             "S labels, so every label but the first window's has ≥ n_seq − S tokens of "
                             "context (default: packed windows, each from an empty state, and the loss "
                             "by position)")
    parser.add_argument("--resolvent", choices=RESOLVENTS,
                        help="evaluate the weights with this BK resolvent (default: the run's); "
                             "causal on a full-resolvent run measures it without the leaked future")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    parser.add_argument("--cache-dir", help="data cache (default: the run's, else $BREATH_CACHE or ~/.cache/breath)")
    parser.add_argument("--output", metavar="FILE.json",
                        help="where the numbers go; the plot goes beside it as .png "
                             "(default: eval_<split>.json next to the checkpoint)")


def run(options: dict[str, Any]) -> None:
    """``breath eval``: check the options, load the run and the split, evaluate, report, write."""
    for name in ("batch_size", "num_batches", "n_seq", "stride"):
        if options[name] is not None and options[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", f"got {options[name]}; allowed: an integer >= 1")
    if options["output"] is not None and Path(options["output"]).suffix.lower() != ".json":
        raise ConfigError("--output", f"got {options['output']!r}; allowed: a file name ending in .json")
    device = select_device(options["device"])
    overrides = {"resolvent": options["resolvent"]} if options["resolvent"] else None
    loaded = load_run(options["run"], overrides=overrides)
    train = loaded.train_options
    dataset = options["dataset"] or train["dataset"]
    n_seq = options["n_seq"] or loaded.model.cfg.n_seq
    batch_size = options["batch_size"] or train["batch_size"]
    output = Path(options["output"]) if options["output"] else default_output(
        loaded, dataset, options["split"], options["resolvent"])
    prepare_output_dir(output.parent, option="--output")

    tokens, words = split_tokens(loaded, dataset, options["split"], options["cache_dir"] or train["cache_dir"])
    stride = options["stride"]
    if stride is not None and stride > n_seq:
        raise ConfigError("--stride", f"got {stride}; allowed: 1 to the window, --n-seq ({n_seq})")
    try:
        windows = WindowDataset(tokens, n_seq) if stride is None else StridedWindows(tokens, n_seq, stride)
    except ValueError as exc:
        raise ConfigError("--n-seq", f"got {n_seq}: {exc}") from None
    model = loaded.model.to(device)
    cfg, parameters = model.cfg, model.num_parameters()
    say(f"{cfg.arch} ({parameters / 1e6:.2f}M parameters, {cfg.resolvent} resolvent) from "
        f"{loaded.checkpoint_path} (epoch {loaded.checkpoint['epoch']}) on {device}; {dataset} "
        f"{options['split']}: windows of {n_seq} tokens, batches of {batch_size}")
    started = time.perf_counter()
    result = evaluate(model, windows, batch_size, options["num_batches"])
    elapsed = time.perf_counter() - started
    per_word = word_perplexity(result.loss, len(tokens), words)
    read = result.windows * n_seq  # tokens through the model: strided windows overlap
    scored = (f"{result.windows:,} windows, {result.tokens:,} tokens" if stride is None else
              f"{result.windows:,} windows of {n_seq} every {stride} tokens, {result.tokens:,} tokens scored, each "
              f"with >= {n_seq - stride} tokens of context but the first window's")
    say(f"loss {result.loss:.4f}  perplexity {perplexity(result.loss):.2f}  per-word perplexity {per_word:.2f}  "
        f"({scored}, {read / elapsed:,.0f} tokens/s; the split: {len(tokens):,} tokens, {words:,} words)")
    bands = None if result.position_loss is None else position_bands(result.position_loss)
    if bands:
        say("loss by position: " + "  ".join(f"{a}-{b} {mean:.3f}" if a != b else f"{a} {mean:.3f}"
                                             for a, b, mean in bands))
    record = {
        "checkpoint": str(loaded.checkpoint_path), "epoch": loaded.checkpoint["epoch"], "arch": cfg.arch,
        "resolvent": cfg.resolvent, "parameters": parameters, "dataset": dataset, "split": options["split"],
        "n_seq": n_seq, "stride": stride, "train_n_seq": cfg.n_seq, "batch_size": batch_size,
        "windows": result.windows, "tokens": result.tokens, "loss": result.loss, "perplexity": perplexity(result.loss),
        "split_tokens": len(tokens), "split_words": words, "word_perplexity": per_word,
        "position_bands": bands and [{"first": a, "last": b, "loss": mean} for a, b, mean in bands],
        "position_loss": result.position_loss, "device": str(device), "elapsed_s": elapsed,
    }
    atomic_write_json(output, record)
    if bands is None:  # strided windows score each position of a window differently: no curve by position
        say(f"wrote {output}")
        return
    plots.plot_position_loss(result.position_loss, bands, output.with_suffix(".png"),
                             f"{cfg.arch} on {dataset} {options['split']}: loss {result.loss:.3f}",
                             train_n_seq=cfg.n_seq)
    say(f"wrote {output} and {output.with_suffix('.png')}")
