"""Settings declared once: a dataclass field made with :func:`option` carries the help text, the
group and the flag details from which ``breath train``'s parser (``breath.cli``) and the option
table of docs/training.md are generated, so the four cannot drift apart.

A field's flag is ``--`` plus its name with dashes (``base_decay`` → ``--base-decay``) unless its
metadata names another (``flag``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The groups of ``breath train --help`` and of the docs' table, in order.
GROUPS = ("run", "model", "Phase 2 dynamics", "data", "optimisation", "runtime", "logging", "output")


def option(default: Any, help: str, group: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, shown_default: str | None = None, const: Any = None) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        help: what it does (``--help`` and the docs' table; ``(default: ...)`` is added to both).
        group: one of :data:`GROUPS`.
        flag: the flag when it is not the field's name with dashes.
        choices: the allowed values of a string option.
        metavar: the value's placeholder (default: N for integers, X for numbers, none for strings).
        shown_default: how the default reads when the value itself does not say it (a None default).
        const: the value of the flag given alone (``--use-triton``), for a string option.
    """
    if group not in GROUPS:
        raise ValueError(f"group: got {group!r}; allowed: {' | '.join(GROUPS)}")
    metadata = {"help": help, "group": group, "flag": flag, "choices": choices, "metavar": metavar,
                "shown_default": shown_default, "const": const}
    return dataclasses.field(default=default, metadata=metadata)


def is_option(field: dataclasses.Field) -> bool:
    return "help" in field.metadata


def flag_of(field: dataclasses.Field | str) -> str:
    """The command-line spelling of a field (or of a field name: ``learning_rate`` → ``--learning-rate``)."""
    if isinstance(field, str):
        return "--" + field.replace("_", "-")
    return field.metadata.get("flag") or flag_of(field.name)


def shown_default(field: dataclasses.Field) -> str | None:
    """The default as ``--help`` and the docs write it (None: nothing to show)."""
    if field.metadata.get("shown_default") is not None:
        return field.metadata["shown_default"]
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return None if field.default is None else str(field.default)
