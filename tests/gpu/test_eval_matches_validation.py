"""On a GPU, a run's best val loss (trained under bf16 autocast) is what ``breath eval --split val``
reports for its best_model.pt: both compute the loss with ``breath.loss``, in float32; and
``breath generate`` decodes it in CUDA-graph steps and says how fast (skipped without CUDA; needs
no network: the corpus is written here).

    PYTHONPATH=src python -m pytest -q -n 0 tests/gpu/test_eval_matches_validation.py
"""

import contextlib
import io
import json
import random
import re

import pytest
import torch

from breath.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MODEL = ["--d-model", "64", "--n-layers", "2", "--num-heads", "2", "--head-dim", "32", "--ffn-dim", "128",
         "--n-seq", "64", "--memory-chunk", "32", "--vocab-size", "512", "--batch-size", "4"]


def command(*args: str, err: io.StringIO | None = None) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err or io.StringIO()):
        return main(list(args))


@pytest.mark.parametrize("arch", ["phase2", "transformer"])
def test_best_val_loss_is_breath_eval_of_the_val_split(arch, tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    corpus = tmp_path / "corpus.jsonl"  # 400 documents: the val split gets 20 (5%)
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=150))}) + "\n" for _ in range(400)))
    run = tmp_path / "run"
    code = command("train", *MODEL, "--arch", arch, "--dataset", str(corpus), "--cache-dir", str(tmp_path / "cache"),
                   "--output-dir", str(run), "--num-epochs", "2", "--num-train-batches", "20",
                   "--num-val-batches", "3", "--learning-rate", "3e-3", "--device", "cuda", "--precision", "bf16")
    assert code == 0
    best = json.loads((run / "training_history.json").read_text())["best_val_loss"]
    code = command("eval", str(run), "--split", "val", "--num-batches", "3", "--device", "cuda",
                   "--output", str(tmp_path / "eval_val.json"))
    assert code == 0
    result = json.loads((tmp_path / "eval_val.json").read_text())
    assert result["windows"] == 12
    assert result["loss"] == pytest.approx(best, rel=1e-5)
    err = io.StringIO()
    assert command("generate", str(run), "--prompt", "ab", "--max-new-tokens", "20", "--temperature", "0",
                   "--device", "cuda", err=err) == 0
    assert re.search(r"\[\d+ tokens in [\d.]+ s \([\d.]+ tokens/s, CUDA-graph steps", err.getvalue()), err.getvalue()
