"""breath: the "Phase 2: Breath of Life" language model, its baselines, and the tools to train,
evaluate, run and compare them."""

__version__ = "0.1.0"
