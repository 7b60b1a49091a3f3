"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), trained on a corpus's train split.

Any byte sequence can be encoded (the 256 byte symbols are always in the vocabulary), and
`decode(encode(text).ids) == text` for every string. One special token, `<|endoftext|>`,
separates documents. Trained tokenizers are cached as
`<cache>/tokenizers/<corpus key>-v<vocab size>.json`.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .corpora import Corpus, Document, report, resolve_cache_dir

EOT = "<|endoftext|>"
MIN_VOCAB_SIZE = 256 + 1 + 1  # the byte alphabet, <|endoftext|>, and at least one merge


def tokenizer_path(corpus: Corpus, vocab_size: int, cache_dir: str | Path | None = None) -> Path:
    """Where the tokenizer of (corpus, requested vocab size) is cached."""
    return resolve_cache_dir(cache_dir) / "tokenizers" / f"{corpus.key}-v{vocab_size}.json"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of at most `vocab_size` tokens on `texts` (no caching)."""
    _check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved as JSON (by `get_tokenizer` or next to a checkpoint)."""
    return Tokenizer.from_file(str(path))


def get_tokenizer(corpus: Corpus, train_docs: list[Document], vocab_size: int,
                  cache_dir: str | Path | None = None) -> Tokenizer:
    """The cached tokenizer for (corpus, vocab_size), trained on `train_docs` if not cached yet.

    When the corpus is too small for `vocab_size` (BPE runs out of pairs to merge), the trained
    vocabulary is smaller and one warning says both sizes; use `tokenizer.get_vocab_size()`.
    """
    _check_vocab_size(vocab_size)
    path = tokenizer_path(corpus, vocab_size, cache_dir)
    if path.exists():
        tokenizer = load_tokenizer(path)
    else:
        report(f"training a byte-level BPE tokenizer (vocab {vocab_size}) on the "
               f"{len(train_docs)} train documents of '{corpus.name}'")
        start = time.perf_counter()
        tokenizer = train_tokenizer((doc.text for doc in train_docs), vocab_size)
        report(f"tokenizer trained in {time.perf_counter() - start:.1f} s, saved to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent or interrupted run never sees a partial file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
        os.close(fd)
        try:
            tokenizer.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    actual = tokenizer.get_vocab_size()
    if actual < vocab_size:
        warnings.warn(f"the corpus '{corpus.name}' supports only {actual} tokens: requested vocab "
                      f"size {vocab_size}, actual {actual}", stacklevel=2)
    return tokenizer


def _check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte tokens, "
                         f"{EOT} and at least one merge), got {vocab_size}")
