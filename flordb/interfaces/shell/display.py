"""Showing results: tables that fit the terminal, a pager for long output.

Tables are fitted to the terminal's width only while every column keeps a
readable width; a table too wide for that is shown at full width in the pager
(``less -S`` scrolls sideways) rather than squeezed into unreadable stubs.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any, Protocol, TextIO

from ..format import render as _render

DEFAULT_PAGER = "less -SRFX"
MAX_ROWS = 100  # longer tables show their first and last rows and a count between
MIN_COLUMN = 10  # fitting never narrows a column below this (or its natural width)


class ResultLike(Protocol):
    """What SQL and dot-commands both hand to the shell (``engine.Result``'s shape)."""

    columns: list[str]
    seconds: float

    @property
    def rows(self) -> list[tuple]: ...


def _widths(table: str) -> list[int]:
    """Column widths of a ``format.table`` rendering, from its rule line."""
    lines = table.split("\n")
    return [len(part) for part in lines[1].split("-+-")] if len(lines) > 1 else []


def sample(result: ResultLike, max_rows: int) -> tuple[list[tuple], int]:
    """The first and last rows of a long result, and how many rows it has.

    Taken from the DataFrame when there is one, so that a million-row answer
    is not turned into a million tuples to show a hundred.
    """
    frame = getattr(result, "frame", None)
    if frame is not None and len(frame) > max_rows:
        head = max_rows // 2
        tail = frame.iloc[len(frame) - (max_rows - head):]
        rows = list(frame.iloc[:head].itertuples(index=False, name=None))
        return rows + list(tail.itertuples(index=False, name=None)), len(frame)
    rows = result.rows
    if len(rows) > max_rows:
        head = max_rows // 2
        return rows[:head] + rows[len(rows) - (max_rows - head):], len(rows)
    return rows, len(rows)


def render(
    mode: str, columns: list[str], rows: list[tuple], *, width: int | None = None,
    total: int | None = None,
) -> str:
    """``rows`` as text in ``mode``; tables fitted to ``width`` when that stays readable.

    ``total``: the size of the result ``rows`` were sampled from (``sample``);
    a line in the middle of the table says how many rows are not shown.
    """
    if mode != "table":
        return _render(mode, columns, rows)
    text = _fit_table(columns, rows, width)
    if total is not None and total > len(rows):
        lines = text.split("\n")
        lines.insert(2 + len(rows) // 2, f"... {total - len(rows)} more rows ...")
        text = "\n".join(lines)
    return text


def _fit_table(columns: list[str], rows: list[tuple], width: int | None) -> str:
    natural = _render("table", columns, rows)
    if width is None or max(map(len, natural.split("\n"))) <= width:
        return natural
    fitted = _render("table", columns, rows, max_width=width)
    ok = all(f >= min(n, MIN_COLUMN) for f, n in zip(_widths(fitted), _widths(natural)))
    return fitted if ok and max(map(len, fitted.split("\n"))) <= width else natural


def footer(n: int, seconds: float | None = None) -> str:
    """``(3 rows)``, with the time when the timer is on."""
    text = f"({n} row{'s' if n != 1 else ''})"
    return text if seconds is None else f"{text}\nTime: {seconds:.3f}s"


def pager_command() -> list[str]:
    """``$PAGER`` split into argv, ``less -SRFX`` when unset."""
    return shlex.split(os.environ.get("PAGER") or DEFAULT_PAGER)


def needs_pager(text: str, width: int, height: int) -> bool:
    """Whether ``text`` would not fit on one screen (leaving room for the prompt)."""
    lines = text.split("\n")
    return len(lines) > max(1, height - 2) or any(len(line) > width for line in lines)


def page(text: str, out: TextIO) -> None:
    """Show ``text`` through the pager; print it when the pager cannot run."""
    env = dict(os.environ)
    env.setdefault("LESSCHARSET", "utf-8")
    try:
        proc = subprocess.Popen(pager_command(), stdin=subprocess.PIPE, env=env)
    except OSError:
        out.write(text + "\n")
        return
    assert proc.stdin is not None
    try:
        proc.stdin.write((text + "\n").encode("utf-8", "replace"))
        proc.stdin.close()
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the user quit the pager before reading everything
    while True:
        try:
            proc.wait()
            break
        except KeyboardInterrupt:  # Ctrl-C belongs to the pager while it runs
            continue


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
