"""The one place that turns user-supplied names into SQL text.

Log names become column names (``a"b``, ``val acc``); every identifier and
literal that flordb writes into generated SQL passes through these helpers, so
a name can never close its quotes and inject SQL.
"""
from __future__ import annotations


def ident(name: str) -> str:
    """A double-quoted SQL identifier: ``a"b`` -> ``"a""b"``."""
    if "\x00" in name:
        raise ValueError("identifiers cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A single-quoted SQL string literal: ``it's`` -> ``'it''s'``."""
    if "\x00" in value:
        raise ValueError("strings cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"
