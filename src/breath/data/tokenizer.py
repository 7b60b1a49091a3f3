"""Tokenizers (Hugging Face `tokenizers`), trained on a corpus's train split: byte-level BPE or words.

`bpe` (the default): any byte sequence can be encoded (the 256 byte symbols are always in the
vocabulary), and `decode(encode(text).ids) == text` for every string. One special token,
`<|endoftext|>`, separates documents.

`word` (the default for `ptb`): one token per whitespace-separated word and one `<eos>` per line
end, for text that is already tokenised (Penn Treebank: its vocabulary is exactly 10,000 =
9,999 words, `<unk>` among them, + `<eos>`). The vocabulary is `<eos>`, `<unk>`, then the most
frequent train words; any other word encodes as `<unk>`. `<eos>` also separates documents.
Decoding joins words with spaces and turns `<eos>` into a newline, so `encode(decode(ids)).ids
== ids` for every id sequence.

Trained tokenizers are cached as `<cache>/tokenizers/<corpus key>-v<vocab size>.json` (BPE) or
`<corpus key>-word-v<vocab size>.json`.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .corpora import Corpus, Document, report, resolve_cache_dir

TOKENIZERS = ("bpe", "word")
EOT = "<|endoftext|>"
EOS, UNK = "<eos>", "<unk>"
MIN_VOCAB_SIZE = 256 + 1 + 1  # the byte alphabet, <|endoftext|>, and at least one merge
MIN_WORD_VOCAB_SIZE = 3  # <eos>, <unk> and at least one word


def default_tokenizer(dataset: str) -> str:
    """The tokenizer a dataset gets unless `--tokenizer` says otherwise: word for ptb, else bpe."""
    return "word" if dataset == "ptb" else "bpe"


def min_vocab_size(kind: str) -> int:
    return MIN_WORD_VOCAB_SIZE if kind == "word" else MIN_VOCAB_SIZE


def tokenizer_path(corpus: Corpus, vocab_size: int, cache_dir: str | Path | None = None,
                   kind: str = "bpe") -> Path:
    """Where the tokenizer of (corpus, requested vocab size, kind) is cached."""
    name = f"{corpus.key}-v{vocab_size}.json" if kind == "bpe" else f"{corpus.key}-{kind}-v{vocab_size}.json"
    return resolve_cache_dir(cache_dir) / "tokenizers" / name


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


def train_word_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A word-level tokenizer: `<eos>`, `<unk>` and the `vocab_size - 2` most frequent words of
    `texts` (ties in alphabetical order), fewer when `texts` have fewer (no caching)."""
    _check_vocab_size(vocab_size, "word")
    counts = Counter(word for text in texts for word in text.split())
    counts.pop(EOS, None)
    counts.pop(UNK, None)
    words = sorted(counts, key=lambda word: (-counts[word], word))[:vocab_size - 2]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate([EOS, UNK, *words])}, unk_token=UNK))
    tokenizer.normalizer = normalizers.Replace("\n", f" {EOS} ")
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Join the words with spaces (WordPiece's decoder puts a space before every token that does not
    # start with its prefix, and no word starts with a space), then one string, then <eos> -> newline.
    tokenizer.decoder = decoders.Sequence([decoders.WordPiece(prefix=" ", cleanup=False), decoders.Fuse(),
                                           decoders.Replace(Regex(f" ?{EOS} ?"), "\n")])
    return tokenizer


def is_word_level(tokenizer: Tokenizer) -> bool:
    return isinstance(tokenizer.model, models.WordLevel)


def separator_id(tokenizer: Tokenizer) -> int:
    """The id of the token between documents: `<|endoftext|>` (BPE) or `<eos>` (word)."""
    token = EOS if is_word_level(tokenizer) else EOT
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token")
    return token_id


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved as JSON (by `get_tokenizer` or next to a checkpoint)."""
    return Tokenizer.from_file(str(path))


def get_tokenizer(corpus: Corpus, train_docs: list[Document], vocab_size: int,
                  cache_dir: str | Path | None = None, kind: str = "bpe") -> Tokenizer:
    """The cached `kind` tokenizer for (corpus, vocab_size), trained on `train_docs` if not cached yet.

    When the corpus is too small for `vocab_size` (BPE runs out of pairs to merge, or there are
    fewer distinct words), the trained vocabulary is smaller and one warning says both sizes; use
    `tokenizer.get_vocab_size()`.
    """
    _check_vocab_size(vocab_size, kind)
    path = tokenizer_path(corpus, vocab_size, cache_dir, kind)
    if path.exists():
        tokenizer = load_tokenizer(path)
    else:
        what = "byte-level BPE" if kind == "bpe" else "word-level"
        report(f"training a {what} tokenizer (vocab {vocab_size}) on the "
               f"{len(train_docs)} train documents of '{corpus.name}'")
        start = time.perf_counter()
        train = train_tokenizer if kind == "bpe" else train_word_tokenizer
        tokenizer = train((doc.text for doc in train_docs), vocab_size)
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


def _check_vocab_size(vocab_size: int, kind: str = "bpe") -> None:
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer: got {kind!r}; allowed: {', '.join(TOKENIZERS)}")
    if vocab_size < min_vocab_size(kind):
        what = f"256 byte tokens, {EOT} and at least one merge" if kind == "bpe" else f"{EOS}, {UNK} and one word"
        raise ValueError(f"vocab_size must be at least {min_vocab_size(kind)} ({what}), got {vocab_size}")
