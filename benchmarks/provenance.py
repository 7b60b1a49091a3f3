"""What every result file records about the code that made it."""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path


def git_commit() -> dict:
    """The checkout's commit and whether the tree has uncommitted changes.

    A copy without .git (the GPU machine gets the working tree only) reads them from
    BREATH_GIT_COMMIT and BREATH_GIT_DIRTY (0 or 1), set by whoever sent the copy; else says unknown.
    """
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        if os.environ.get("BREATH_GIT_COMMIT"):
            return {"git_commit": os.environ["BREATH_GIT_COMMIT"],
                    "git_dirty": os.environ.get("BREATH_GIT_DIRTY", "1") != "0"}
        return {"git_commit": f"unknown ({type(error).__name__}: not a git checkout?)", "git_dirty": None}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def run_record(argv: list[str] | None = None) -> dict:
    """Date (UTC), the command line that ran (``argv``, default sys.argv) and the commit: the fields
    every raw JSON carries."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join(["python", *(sys.argv if argv is None else argv)]), **git_commit()}
