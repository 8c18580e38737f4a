"""Rendering results for people and programs: aligned tables, CSV, JSON, Markdown."""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime
from typing import Any

FORMATS = ("table", "csv", "json", "markdown")


def cell(value: Any) -> str:
    """A value as people read it: NULL, trimmed floats, ISO timestamps."""
    if value is None or _is_missing(value):
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value):
            return "NULL"
        return f"{value:.6g}"
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else str(value)
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return str(value)
    return str(value)


def _is_missing(value: Any) -> bool:
    """pandas' missing markers (NA of nullable integer columns, NaT)."""
    module = type(value).__module__
    if not module.startswith("pandas"):
        return False
    import pandas as pd

    return value is pd.NA or value is pd.NaT


def _plain(value: Any) -> Any:
    """A JSON/CSV-safe Python value (NaN and NaT become None)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


def table(
    columns: list[str], rows: list[tuple], max_width: int | None = None,
    max_rows: int | None = None, max_cell: int = 40,
) -> str:
    """An aligned text table; wide cells truncated, middle rows of long results elided."""
    shown = rows
    elided = 0
    if max_rows is not None and len(rows) > max_rows:
        head = max_rows // 2
        tail = max_rows - head
        shown = rows[:head] + rows[len(rows) - tail:]
        elided = len(rows) - len(shown)
    text = [[_trunc(cell(v), max_cell) for v in row] for row in shown]
    heads = [_trunc(c, max_cell) for c in columns]
    widths = [len(h) for h in heads]
    for row in text:
        for k, v in enumerate(row):
            widths[k] = max(widths[k], len(v))
    numeric = [
        all(isinstance(_plain(r[k]), (int, float)) and not isinstance(r[k], bool)
            for r in shown if _plain(r[k]) is not None) and any(_plain(r[k]) is not None for r in shown)
        for k in range(len(columns))
    ]
    if max_width is not None:
        widths = _fit(widths, max_width)

    def line(values: list[str]) -> str:
        out = []
        for k, v in enumerate(values):
            v = _trunc(v, widths[k])
            out.append(v.rjust(widths[k]) if numeric[k] else v.ljust(widths[k]))
        return " | ".join(out).rstrip()

    lines = [line(heads), "-+-".join("-" * w for w in widths)]
    half = len(shown) if not elided else (max_rows or 0) // 2
    for k, row in enumerate(text):
        if elided and k == half:
            lines.append(f"... {elided} more rows ...")
        lines.append(line(row))
    return "\n".join(lines)


def _trunc(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    if len(text) <= width:
        return text
    return text[: max(1, width - 1)] + "…"


def _fit(widths: list[int], max_width: int) -> list[int]:
    """Shrink the widest columns until the table fits ``max_width``."""
    widths = list(widths)
    sep = 3 * (len(widths) - 1)
    while sum(widths) + sep > max_width:
        k = max(range(len(widths)), key=lambda i: widths[i])
        if widths[k] <= 6:
            break
        widths[k] -= 1
    return widths


def to_csv(columns: list[str], rows: list[tuple]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if _plain(v) is None else _plain(v) for v in row])
    return buf.getvalue()


def to_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([{c: _plain(v) for c, v in zip(columns, row)} for row in rows], default=str)


def to_markdown(columns: list[str], rows: list[tuple]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(esc(cell(v)) for v in row) + " |")
    return "\n".join(lines)


def render(fmt: str, columns: list[str], rows: list[tuple], **table_opts: Any) -> str:
    if fmt == "table":
        return table(columns, rows, **table_opts)
    if fmt == "csv":
        return to_csv(columns, rows).rstrip("\n")
    if fmt == "json":
        return to_json(columns, rows)
    if fmt == "markdown":
        return to_markdown(columns, rows)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
