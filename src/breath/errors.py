"""``FieldError``: a bad value of one named setting, so callers map it to a flag or a config key by
the field's name instead of parsing a message."""

from __future__ import annotations


class FieldError(ValueError):
    """``field`` (a dataclass field name, ``n_seq``) holds a bad value; ``message`` says what was
    given and what is allowed. ``str()`` is ``"<field>: <message>"``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
