"""Splitting shell input into statements: SQL ends at ``;``, a dot-command at its line.

A small scanner rather than a SQL parser, so that it is instant on every key
press: it only needs to know where strings, quoted identifiers and comments
begin and end, because a ``;`` inside them does not end a statement.
"""
from __future__ import annotations


def _scan(text: str) -> tuple[list[int], bool]:
    """Offsets of the statement-ending ``;`` in ``text``; whether text ends inside a quote."""
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:  # '' or "" escapes the quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                return ends, True
            i = j + 1
        elif c == "-" and text.startswith("--", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif c == "/" and text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                return ends, True
            i = close + 2
        else:
            if c == ";":
                ends.append(i)
            i += 1
    return ends, False


def is_command(text: str) -> bool:
    """A dot-command (``.tables``) rather than SQL."""
    return text.lstrip().startswith(".")


def is_complete(text: str) -> bool:
    """Whether pressing Enter should run ``text`` rather than start a new line.

    >>> is_complete("SELECT 1"), is_complete("SELECT ';'"), is_complete("SELECT 1;")
    (False, False, True)
    """
    stripped = text.strip()
    if not stripped or is_command(stripped) or stripped.lower() in ("quit", "exit"):
        return True
    ends, open_quote = _scan(text)
    if open_quote or not ends:
        return False
    return not _meaningful(text[ends[-1] + 1:])


def _meaningful(text: str) -> bool:
    """Anything but whitespace and comments."""
    rest = text.strip()
    while rest:
        if rest.startswith("--"):
            nl = rest.find("\n")
            rest = "" if nl < 0 else rest[nl + 1:].strip()
        elif rest.startswith("/*") and "*/" in rest:
            rest = rest[rest.find("*/") + 2:].strip()
        else:
            return True
    return False


def split(text: str) -> list[str]:
    """Statements of a script: SQL up to each ``;`` and dot-commands one per line.

    >>> split(".mode csv\\nSELECT 1;\\nSELECT ';'\\n  AS x;")
    ['.mode csv', 'SELECT 1;', "SELECT ';'\\n  AS x;"]

    SQL without a final ``;`` is a statement too (the script's last).
    """
    out: list[str] = []
    pending = ""
    for line in text.splitlines(keepends=True):
        if not _meaningful(pending) and is_command(line):
            out.append(line.strip())
            pending = ""
            continue
        pending += line
        ends, open_quote = _scan(pending)
        if open_quote or not ends:
            continue
        start = 0
        for end in ends:
            stmt = pending[start:end + 1].strip()
            if _meaningful(stmt[:-1]):
                out.append(stmt)
            start = end + 1
        pending = pending[start:]
        if not _meaningful(pending):
            pending = ""
    if _meaningful(pending):
        out.append(pending.strip())
    return out
