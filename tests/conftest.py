"""Fixtures shared by test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
