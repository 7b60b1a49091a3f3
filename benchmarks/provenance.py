"""What every result file records about the code that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> dict:
    """The checkout's commit and whether the tree has uncommitted changes (a copy without .git says so)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        return {"git_commit": f"unknown ({type(error).__name__}: not a git checkout?)", "git_dirty": None}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}
