#!/usr/bin/env python
"""Train the Phase 2 "Breath of Life" model: the seed's entry point, now ``breath train``.

    python scripts/train_phase2.py --preset small --num-epochs 3

Every option, output and exit code is documented in docs/training.md (``--help`` lists them).
"""

import sys

from breath.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(prog=f"python {sys.argv[0]}"))
