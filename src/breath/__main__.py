"""``python -m breath COMMAND [options]``: the same command line as ``breath``."""

import sys

from breath.cli import main

sys.exit(main())
