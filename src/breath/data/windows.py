"""Token streams, packed training windows and data-parallel loaders.

`prepare_data(dataset, vocab_size, n_seq)` does the whole pipeline: load the corpus, split it
by document, get the tokenizer (trained on train only) and encode each split into one 1-D token
tensor, documents joined by the tokenizer's separator (`<|endoftext|>`, or `<eos>` for words).
Every step is cached, so a second call only reads files. `WindowDataset` cuts a token tensor into
packed windows (`StridedWindows`: overlapping ones, for sliding-window evaluation); `make_loader`
shards and shuffles them for (data-parallel) training.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from breath.errors import FieldError

from .corpora import SPLITS, Corpus, Document, load_corpus, report, resolve_cache_dir, split_documents
from .tokenizer import default_tokenizer, get_tokenizer, separator_id, tokenizer_path

_ENCODE_BATCH = 256  # documents per encode_batch call (it parallelises within a batch)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves memory and disk while every id fits; int32 beyond."""
    return np.dtype(np.uint16 if vocab_size < 2**16 else np.int32)


def encode_documents(tokenizer: Tokenizer, documents: list[Document], desc: str = "encoding") -> torch.Tensor:
    """One 1-D token tensor: the documents' tokens joined by the tokenizer's separator
    (`<|endoftext|>`, or `<eos>` for a word tokenizer; between documents)."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    separator = np.array([separator_id(tokenizer)], dtype=dtype)
    parts: list[np.ndarray] = []
    with tqdm(total=len(documents), desc=desc, unit="doc", disable=None, leave=False) as bar:
        for start in range(0, len(documents), _ENCODE_BATCH):
            batch = documents[start:start + _ENCODE_BATCH]
            for encoding in tokenizer.encode_batch([doc.text for doc in batch]):
                if parts:
                    parts.append(separator)
                parts.append(np.asarray(encoding.ids, dtype=dtype))
            bar.update(len(batch))
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype=dtype))


def encode_split(tokenizer: Tokenizer, corpus: Corpus, vocab_size: int, split: str,
                 documents: list[Document], cache_dir: str | Path | None = None) -> torch.Tensor:
    """`encode_documents`, cached as `<cache>/tokens/<corpus key>-v<vocab>-<tokenizer hash>-<split>.npy`.

    The hash of the tokenizer's serialisation is part of the name, so a retrained tokenizer never
    meets tokens encoded by an earlier one.
    """
    tokenizer_hash = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:10]
    path = resolve_cache_dir(cache_dir) / "tokens" / f"{corpus.key}-v{vocab_size}-{tokenizer_hash}-{split}.npy"
    if path.exists():
        return torch.from_numpy(np.load(path))
    start = time.perf_counter()
    tokens = encode_documents(tokenizer, documents, desc=f"encoding {split}")
    report(f"encoded {split}: {len(documents)} documents -> {len(tokens):,} tokens "
           f"in {time.perf_counter() - start:.1f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, tokens.numpy())
        os.replace(tmp, path)  # rename: the cache file is either complete or absent
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tokens


def _check_length(tokens: torch.Tensor, n_seq: int, what: str) -> None:
    if len(tokens) < n_seq + 1:
        raise FieldError("n_seq", f"{what} has {len(tokens)} tokens, but one window of n_seq={n_seq} needs "
                         f"{n_seq + 1} (inputs plus the shifted label); use a smaller n_seq or more text")


class WindowDataset(Dataset):
    """Packed contiguous windows of a 1-D token tensor.

    Window i covers tokens[i·n_seq : i·n_seq + n_seq + 1]; item i is (inputs, labels) =
    (window[:-1], window[1:]) as int64, so labels are the inputs shifted by one and item i+1's
    inputs start where item i's end. The tail that does not fill a window is dropped.
    """

    def __init__(self, tokens: torch.Tensor, n_seq: int):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(tokens.shape)}")
        if n_seq < 1:
            raise ValueError(f"n_seq must be positive, got {n_seq}")
        _check_length(tokens, n_seq, "the split")
        self.tokens = tokens
        self.n_seq = n_seq

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.n_seq

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        window = self.tokens[i * self.n_seq:(i + 1) * self.n_seq + 1].long()
        return window[:-1], window[1:]


IGNORE = -100  # a label that scores nothing: F.cross_entropy's ignore_index gives it loss 0


class StridedWindows(Dataset):
    """Overlapping windows of n_seq tokens, one every ``stride`` tokens, each scoring only the tokens
    no earlier window scored (sliding-window evaluation).

    Window k covers tokens[k·s : k·s + n_seq + 1] (s = stride ≤ n_seq); window 0 scores all n_seq of
    its labels, window k > 0 only its last s (labels before them are ``IGNORE``). So every label up
    to the last window's end is scored exactly once, and all but the first window's are predicted
    from at least n_seq − s tokens of context. The tail of fewer than s labels is dropped.
    """

    def __init__(self, tokens: torch.Tensor, n_seq: int, stride: int):
        if not 1 <= stride <= n_seq:
            raise FieldError("stride", f"got {stride}; allowed: 1 to n_seq ({n_seq})")
        _check_length(tokens, n_seq, "the split")
        self.tokens, self.n_seq, self.stride = tokens, n_seq, stride

    def __len__(self) -> int:
        return 1 + (len(self.tokens) - 1 - self.n_seq) // self.stride

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"window {k} out of range for {len(self)} windows")
        window = self.tokens[k * self.stride:k * self.stride + self.n_seq + 1].long()
        labels = window[1:].clone()
        if k:
            labels[:self.n_seq - self.stride] = IGNORE
        return window[:-1], labels


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = True) -> DataLoader:
    """A DataLoader over this rank's shard of `dataset` for one epoch.

    The window order is the same on every rank: a permutation drawn from (seed, epoch) when
    `shuffle`, else the natural order. The first world_size·⌊n/world_size⌋ windows of that order
    are dealt out round-robin, so ranks get disjoint shards of equal size (the remaining
    n mod world_size windows are skipped this epoch). Call again with the next epoch to reshuffle.
    `drop_last` drops a final partial batch (keep it for evaluation: drop_last=False).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    n = len(dataset)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    else:
        order = np.arange(n)
    shard = order[:n - n % world_size][rank::world_size].tolist()
    if len(shard) == 0 or (drop_last and len(shard) < batch_size):
        raise ValueError(f"{n} windows over {world_size} rank(s) give {len(shard)} per rank, "
                         f"fewer than one batch of {batch_size}")
    return DataLoader(Subset(dataset, shard), batch_size=batch_size, shuffle=False, drop_last=drop_last)


@dataclass
class DataBundle:
    """Everything training needs from the data side: the tokenizer and three token streams."""

    tokenizer: Tokenizer
    vocab_size: int  # the tokenizer's actual size (may be below the requested one)
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    corpus_name: str
    tokenizer_path: Path


def prepare_data(dataset: str = "shakespeare", vocab_size: int = 10000, n_seq: int = 512,
                 cache_dir: str | Path | None = None, tokenizer_kind: str | None = None) -> DataBundle:
    """Load, split, tokenize and encode `dataset`, reusing every cached step. `tokenizer_kind` is
    `bpe` or `word` (None: `default_tokenizer(dataset)`, word for ptb).

    Raises DataError when the corpus cannot be obtained and ValueError when a split is shorter
    than one window of `n_seq` tokens.
    """
    cache = resolve_cache_dir(cache_dir)
    corpus = load_corpus(dataset, cache)
    splits = split_documents(corpus)
    kind = tokenizer_kind or default_tokenizer(dataset)
    tokenizer = get_tokenizer(corpus, splits["train"], vocab_size, cache, kind)
    tokens = {name: encode_split(tokenizer, corpus, vocab_size, name, splits[name], cache) for name in SPLITS}
    for name in SPLITS:
        _check_length(tokens[name], n_seq, f"the {name} split of '{corpus.name}'")
    report(f"'{corpus.name}': " + ", ".join(f"{name} {len(tokens[name]):,} tokens" for name in SPLITS)
           + f" (vocab {tokenizer.get_vocab_size()})")
    return DataBundle(
        tokenizer=tokenizer,
        vocab_size=tokenizer.get_vocab_size(),
        train=tokens["train"],
        val=tokens["val"],
        test=tokens["test"],
        corpus_name=corpus.name,
        tokenizer_path=tokenizer_path(corpus, vocab_size, cache, kind),
    )
