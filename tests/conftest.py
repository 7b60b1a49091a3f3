"""Fixtures shared by test modules."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

# One compute thread per test process (subprocesses inherit it): pytest-xdist already runs one
# worker per core, and oversubscribed OpenMP pools stall at every barrier of the models' many small
# ops (seen here: a phase2 step 20x slower with 2 workers x 2 threads on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Without a GPU, Triton kernels run in its CPU interpreter. Triton reads this once, when first
# imported, and importing transformers (tests/test_hf.py) imports it: set before any test module.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def breath_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data/tokenizer cache for the whole test run, shared by pytest-xdist workers, so a
    built-in corpus is downloaded and a tokenizer trained once. Pass it as ``cache_dir`` or
    ``--cache-dir``, or as ``BREATH_CACHE`` to a subprocess."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base directories share this parent
    cache = root / "breath-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def cache(breath_cache: Path) -> Path:
    """The session cache with the built-in shakespeare tokenized at vocabulary 512 and windows of 64
    (what the command-line tests train on; one xdist worker prepares it, under a lock)."""
    from filelock import FileLock

    from breath.data.windows import prepare_data

    with FileLock(str(breath_cache / "shakespeare-512.lock")):
        prepare_data("shakespeare", 512, 64, cache_dir=breath_cache)
    return breath_cache

# The tiny phase2 run that the inference and Hugging Face tests share (trained once per session).
TINY_RUN = ["--d-model", "64", "--n-layers", "2", "--num-heads", "2", "--head-dim", "32", "--ffn-dim", "128",
            "--n-seq", "64", "--memory-chunk", "32", "--vocab-size", "512", "--batch-size", "4",
            "--num-train-batches", "3", "--num-val-batches", "2", "--learning-rate", "1e-3", "--num-epochs", "1"]


@pytest.fixture(scope="session")
def run_dir(breath_cache: Path) -> Path:
    """A phase2 run written by the seed's entry point (once per session, whichever worker is first)."""
    from filelock import FileLock

    directory = breath_cache.parent / "inference-phase2-run"
    # The lock is the one conftest's `cache` fixture takes to prepare the same corpus and vocabulary.
    with FileLock(str(breath_cache / "shakespeare-512.lock")):
        if not (directory / "best_model.pt").is_file():
            result = subprocess.run(
                [sys.executable, "scripts/train_phase2.py", *TINY_RUN, "--cache-dir", str(breath_cache),
                 "--output-dir", str(directory)],
                cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def corpus_cache() -> Path:
    """The real data cache ($BREATH_CACHE, else ~/.cache/breath) for the tests of the larger
    built-in corpora (ptb, english): they are fetched and extracted once per machine, not once per
    test session. Their content is pinned by checksums, so tests share it with real runs."""
    from breath.data.corpora import resolve_cache_dir

    cache = resolve_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _logits_in_pieces(model: torch.nn.Module, ids: torch.Tensor, pieces: list[int]):
    """(logits, final state) of ``ids`` fed to ``model`` in consecutive pieces of the given sizes,
    each call continuing from the previous call's state: recurrent = parallel compares it with one call."""
    state, outs, start = None, [], 0
    for size in pieces:
        out = model(ids[:, start : start + size], state=state)
        outs.append(out.logits)
        state, start = out.state, start + size
    return torch.cat(outs, dim=1), state


@pytest.fixture
def logits_in_pieces():
    return _logits_in_pieces


def _close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """``actual`` equals ``expected`` (same dtype and shape) to ``rtol`` times the largest entry of
    ``expected``: the measure for kernels whose rounding error scales with the whole tensor (sums,
    recurrences), not with each entry."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale + 1e-30)


@pytest.fixture
def close_to_scale():
    return _close_to_scale


def _compiled_matches_eager(f, x: torch.Tensor) -> None:
    """``f(x)`` (a scalar) compiled with ``fullgraph=True`` — so any graph break fails — gives the
    eager value and the eager gradient of x."""
    x_eager, x_comp = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = f(x_eager)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x_comp)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(x_comp.grad, x_eager.grad)


@pytest.fixture
def compiled_matches_eager():
    return _compiled_matches_eager


def _rotate_each_pair(x: torch.Tensor, pos: int) -> torch.Tensor:
    """The definition (and the code before 2026-12-04): pair i of position t turned by (pos + t) θ_i."""
    from breath.layers.attention import ROPE_BASE

    d, dtype = x.shape[-1], torch.promote_types(x.dtype, torch.float32)
    inv_freq = ROPE_BASE ** (-torch.arange(0, d, 2, device=x.device, dtype=dtype) / d)
    angles = torch.arange(pos, pos + x.shape[-2], device=x.device, dtype=dtype)[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.to(dtype)[..., 0::2], x.to(dtype)[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).to(x.dtype)


@pytest.fixture
def rotate_each_pair():
    return _rotate_each_pair


def _tiny_model(arch: str = "phase2", **overrides) -> torch.nn.Module:
    """A model small enough for float64 checks (seed 0, dropout 0): d_model 32, 2 layers, 2 heads of 8,
    vocabulary 97, memory chunks of 8 (several in a 40-token sequence). ``overrides`` are ModelConfig
    fields; the model is returned as built (float32, training mode)."""
    from breath import ModelConfig, build_model

    fields = dict(vocab_size=97, d_model=32, n_layers=2, n_seq=32, num_heads=2, head_dim=8, ffn_dim=64,
                  dropout=0.0, memory_chunk=8)
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**fields, "arch": arch, **overrides}))


@pytest.fixture
def tiny_model():
    return _tiny_model


def _breath_cli(*args: str) -> tuple[int, str, str]:
    """``breath ARGS`` in this process: (exit code, stdout, stderr)."""
    from breath.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def breath_cli():
    return _breath_cli


def _tiny_trainer(output_dir: Path, **overrides):
    """A 1-layer phase2 trainer on random tokens (vocabulary 300, windows of 32), built the way the CLI
    builds one; ``overrides`` are configuration options."""
    from breath.data.windows import WindowDataset
    from breath.models import build_model
    from breath.train.config import resolve_config
    from breath.train.trainer import Trainer

    options = dict(d_model=32, n_layers=1, num_heads=2, head_dim=16, ffn_dim=64, n_seq=32, memory_chunk=16,
                   vocab_size=300, num_epochs=2)
    train_cfg, model_cfg = resolve_config({**options, "output_dir": str(output_dir), **overrides})
    torch.manual_seed(train_cfg.seed)
    tokens = torch.randint(0, 300, (3000,), generator=torch.Generator().manual_seed(0))
    return Trainer(build_model(model_cfg), model_cfg, train_cfg, WindowDataset(tokens[:2400], model_cfg.n_seq),
                   WindowDataset(tokens[2400:], model_cfg.n_seq), torch.device("cpu"))


@pytest.fixture
def tiny_trainer():
    return _tiny_trainer
