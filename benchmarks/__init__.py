"""The benchmark scripts, importable as the package ``benchmarks`` (tests import them, and they import
each other, as ``benchmarks.NAME``); each still runs as ``python benchmarks/NAME.py`` from the
repository root."""
