"""lm-evaluation-harness tasks over a corpus split, written next to a ``breath export --format hf``.

``write_task`` writes, into one directory (pass it to ``lm_eval --include_path``),

    breath_<dataset>.yaml               the task: ``loglikelihood_rolling`` over the split
    breath_<dataset>_<split>.jsonl      the split as one document, with its token/word/byte counts
    breath_metrics.py                   the task's ``process_results``

The task of any corpus ``breath train --dataset`` reads is this one generator: ``breath_shakespeare``
for the built-in shakespeare, ``breath_ptb`` once a ``ptb`` corpus exists, ``breath_<file stem>``
for a local file.

Why one document: ``breath eval`` encodes the split as one token stream, the documents joined by
``<|endoftext|>``, and scores packed windows of ``n_seq`` tokens, each from an empty state. The
jsonl holds the same stream as text (the documents joined by the literal ``<|endoftext|>``, which
the tokenizer reads as that one token), and lm_eval, with ``max_length`` = the config's ``n_ctx``
= ``n_seq``, prefixes ``<|endoftext|>`` and cuts windows of ``n_seq`` predictions each, also from an
empty state. The two differ only at the ends: lm_eval's windows start one token earlier (the
prefix is its first input), it also predicts the stream's first token (from the prefix), and it
scores the last partial window (over a full window of context) that ``breath eval`` drops.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from breath.data.corpora import Document
from breath.data.tokenizer import EOT
from breath.data.windows import encode_documents

METRICS_FILE = Path(__file__).with_name("breath_metrics.py")
TASK_YAML = """\
# Written by `breath export --format hf` (breath.lm_eval_tasks): the {dataset} {split} split.
# token_perplexity is `breath eval`'s perplexity; see breath.lm_eval_tasks for the windowing.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    {split}: {data_file}
test_split: {split}
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
process_results: !function breath_metrics.process_results
metric_list:
  - metric: token_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
"""


def task_name(dataset: str) -> str:
    """``breath_<dataset>``: a built-in corpus's name, or a local corpus's file stem."""
    stem = Path(dataset).stem if ("/" in dataset or "." in dataset) else dataset
    return "breath_" + re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_").lower()


def write_task(directory: Path, dataset: str, split: str, documents: list[Document],
               tokenizer: Tokenizer) -> list[Path]:
    """Write the task of ``split`` of ``dataset`` (its ``documents``) into ``directory``; returns
    the paths written. The data file is named by its absolute path in the yaml (lm_eval resolves
    relative paths against its working directory), so move the export by exporting again."""
    directory.mkdir(parents=True, exist_ok=True)
    task = task_name(dataset)
    row = {"text": EOT.join(doc.text for doc in documents),
           "tokens": len(encode_documents(tokenizer, documents)),
           # lm_eval's own word count (its count_words) and byte count, per document
           "words": sum(len(re.split(r"\s+", doc.text)) for doc in documents),
           "bytes": sum(len(doc.text.encode("utf-8")) for doc in documents)}
    data_file = directory / f"{task}_{split}.jsonl"
    data_file.write_text(json.dumps(row) + "\n", encoding="utf-8")
    yaml_file = directory / f"{task}.yaml"
    yaml_file.write_text(TASK_YAML.format(dataset=dataset, split=split, task=task,
                                          data_file=json.dumps(str(data_file.resolve()))), encoding="utf-8")
    metrics_file = directory / METRICS_FILE.name
    shutil.copyfile(METRICS_FILE, metrics_file)
    return [yaml_file, data_file, metrics_file]
