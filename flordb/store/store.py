"""The storage engine: the only module that opens the DuckDB database.

DuckDB admits one writing process at a time, and no readers while it writes.
flordb therefore never holds the database open for long: a run appends to its
own pending segment file while it trains (see ``segments``) and ingests it in
one short transaction when it ends. Whoever opens the database next (another
run, a query, the shell) first ingests every segment whose writer is gone, so
a run that ended while another process held the database, or was killed, still
lands. Segments are ingested exactly once: the ``segments`` table records each
one in the same transaction as its rows.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .. import settings
from ..errors import StoreError
from . import schema, segments

DB_NAME = "flordb.duckdb"
_SCHEMA_CHECKED: set[str] = set()
_VTYPES = {float: "float", int: "int", bool: "bool", str: "str"}


@dataclass(frozen=True)
class IngestReport:
    segments: int
    records: int
    pending: int  # segments left pending (writer alive, or database busy)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used" in text


def _ts(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None)


def value_columns(value: Any) -> tuple[str, float | None, str | None]:
    """(vtype, num, txt) for one recorded value; numbers stay numeric in SQL."""
    kind = _VTYPES.get(type(value))
    if kind == "str":
        return "str", None, value
    if kind is not None:
        return kind, float(value), None
    if value is None:
        return "json", None, "null"
    return "json", None, json.dumps(value, default=str)


class Store:
    """One flordb database (all projects) under ``home``."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home is not None else settings.home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / DB_NAME

    # ------------------------------------------------------------ connections
    @contextlib.contextmanager
    def connect(self, write: bool = False, timeout: float = 30.0) -> Iterator[Any]:
        """A connection of our own; retries while another process holds the lock."""
        if not write and str(self.path) not in _SCHEMA_CHECKED:
            # Create or migrate the schema once per process, when the lock allows.
            try:
                with self.connect(write=True, timeout=timeout if not self.path.exists() else 1.0):
                    pass
            except StoreError:
                if not self.path.exists():
                    raise
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=not write)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open {self.path}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the database {self.path} is locked by another process "
                        f"(a training run ingesting, or a writer); try again shortly"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        try:
            if write:
                schema.apply(con)
                _SCHEMA_CHECKED.add(str(self.path))
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------------ ingest
    def pending(self) -> list[Path]:
        return sorted(segments.pending_dir(self.home).glob("*.seg"))

    def ingest_pending(self, timeout: float = 30.0, quiet: bool = True) -> IngestReport:
        """Ingest every pending segment whose writer has exited."""
        files = self.pending()
        if not files:
            return IngestReport(0, 0, 0)
        locked: list[tuple[Path, int]] = []
        for path in files:
            fd = segments.try_lock(path)
            if fd is not None:
                locked.append((path, fd))
        left = len(files) - len(locked)
        done = records = 0
        if not locked:
            return IngestReport(0, 0, left)
        try:
            with self._ingest_lock(timeout), self.connect(write=True, timeout=timeout) as con:
                for path, _ in locked:
                    try:
                        records += self._ingest_one(con, path)
                        done += 1
                    except duckdb.Error as exc:
                        # e.g. a full disk: this segment stays pending, intact, for later
                        left += 1
                        print(f"flordb: warning: {path.name} stays pending: "
                              f"{str(exc).splitlines()[0]}", file=sys.stderr)
        except StoreError as exc:
            if not quiet:
                print(f"flordb: {len(locked)} finished run(s) stay pending: {exc}", file=sys.stderr)
            left += len(locked) - done
        finally:
            for _, fd in locked:
                os.close(fd)
        return IngestReport(done, records, left)

    @contextlib.contextmanager
    def _ingest_lock(self, timeout: float) -> Iterator[None]:
        """Serialises ingesters on this machine (DuckDB's own lock fails fast)."""
        fd = os.open(self.home / "ingest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise StoreError("another flordb process is ingesting; try again") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)

    def _ingest_one(self, con: Any, path: Path) -> int:
        seg_id = path.stem
        if con.execute("SELECT 1 FROM segments WHERE segment = ?", [seg_id]).fetchone():
            path.unlink(missing_ok=True)  # ingested before; the unlink was lost
            return 0
        frames = list(segments.read_frames(path))
        head = next((f for f in frames if f.get("t") == "run"), None)
        if head is None:  # died before writing its header: nothing to keep
            path.unlink(missing_ok=True)
            return 0
        end = next((f for f in reversed(frames) if f.get("t") == "end"), None)
        run_id = head["run_id"]
        source = head.get("source", "record")
        logs = [f for f in frames if f.get("t") == "logs"]
        con.execute("BEGIN TRANSACTION")
        try:
            if source == "record":
                self._ingest_run(con, head, end, frames)
            n = self._ingest_logs(con, run_id, source, logs, projid=head.get("projid"))
            self._ingest_checkpoints(con, run_id, frames)
            con.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?)",
                [seg_id, run_id, n, datetime.now(UTC).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        path.unlink(missing_ok=True)
        return n

    def _ingest_run(self, con: Any, head: dict, end: dict | None, frames: list[dict]) -> None:
        run_id, projid = head["run_id"], head["projid"]
        con.execute(
            "INSERT INTO projects VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [projid, head.get("repo_path"), _ts(head["tstamp"])],
        )
        if head.get("vid"):
            con.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [projid, head["vid"], _ts(head["tstamp"]), head.get("branch"), head.get("head")],
            )
        status = end["status"] if end else "killed"
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                run_id, projid, _ts(head["tstamp"]), _ts(end["end_time"]) if end else None,
                status, head.get("vid"), head.get("filename"), head.get("host"), head.get("pid"),
                json.dumps(head.get("argv", [])), head.get("mode", "record"),
                end.get("error") if end else None, end.get("ckpt_overhead") if end else None,
                head.get("cwd"),
            ],
        )
        args: dict[str, Any] = {}
        for frame in frames:
            if frame.get("t") == "args":
                args.update(frame["items"])
        if args:
            rows = [(run_id, name, *value_columns(v)) for name, v in args.items()]
            con.execute("DELETE FROM args WHERE run_id = ?", [run_id])
            con.executemany("INSERT INTO args VALUES (?, ?, ?, ?, ?)", rows)
        iters = [row for f in frames if f.get("t") == "iter" for row in f["items"]]
        if iters:
            k = len(iters)
            table = pa.table(
                {
                    "loop_name": _dict_strings([r[0] for r in iters]),
                    "iteration": _numbers(np.fromiter((r[1] for r in iters), np.int32, k)),
                    "seconds": _numbers(np.fromiter((r[2] for r in iters), np.float64, k)),
                    "checkpointed": _bools(np.fromiter((bool(r[3]) for r in iters), bool, k)),
                }
            )
            con.register("_iters", table)
            con.execute(
                "INSERT OR REPLACE INTO iterations (run_id, loop_name, iteration, seconds, "
                "checkpointed) SELECT ?, loop_name, iteration, seconds, checkpointed FROM _iters",
                [run_id],
            )
            con.unregister("_iters")

    def _ingest_logs(
        self, con: Any, run_id: str, source: str, frames: list[dict], projid: str | None = None
    ) -> int:
        names: list[str] = []
        values: list[Any] = []
        paths: list[str] = []
        ctxs: list[tuple] = []
        flags: list[str | None] | None = None  # None while no frame carries flags
        for frame in frames:
            k = len(frame["names"])
            if frame.get("flags") is not None and flags is None:
                flags = [None] * len(names)
            names += frame["names"]
            values += frame["values"]
            paths += frame["paths"]
            ctxs += frame["ctxs"]
            if flags is not None:
                flags += frame.get("flags") or [None] * k
        n = len(names)
        if n == 0:
            return 0
        # Columnar throughout: a run's end-of-run ingest of 1M records must take
        # well under the 2 s budget, so no per-record Python beyond C-level map/chain.
        vtype, num, txt = _value_arrays(values)
        cols: dict[str, Any] = {
            "seq": _numbers(np.arange(n, dtype=np.int64)),
            # Few distinct names and paths: dictionary-encoded, converted once each.
            "name": _dict_strings(names),
            "path": _dict_strings(paths),
            **_loop_arrays(ctxs, n),
            "vtype": vtype,
            "num": num,
            "txt": txt,
            "flag": _strings(flags) if flags is not None else pa.nulls(n, pa.string()),
        }
        con.register("_logs", pa.table(cols))
        if source != "record":
            # A replay recomputes values: the newest replay of a (name, context) wins.
            con.execute(
                """
                DELETE FROM logs WHERE run_id = ? AND source <> 'record' AND EXISTS (
                    SELECT 1 FROM (SELECT DISTINCT name, path, i1, i2, i3, i4, i5, i6 FROM _logs) n
                    WHERE n.name = logs.name AND n.path = logs.path
                      AND n.i1 IS NOT DISTINCT FROM logs.i1 AND n.i2 IS NOT DISTINCT FROM logs.i2
                      AND n.i3 IS NOT DISTINCT FROM logs.i3 AND n.i4 IS NOT DISTINCT FROM logs.i4
                      AND n.i5 IS NOT DISTINCT FROM logs.i5 AND n.i6 IS NOT DISTINCT FROM logs.i6)
                """,
                [run_id],
            )
        loops = ", ".join(f"i{d + 1}" for d in range(schema.MAX_DEPTH))
        con.execute(
            f"INSERT INTO logs (run_id, seq, source, name, path, {loops}, vtype, num, txt, flag) "
            f"SELECT ?, seq, ?, name, path, {loops}, vtype, num, txt, flag "
            "FROM _logs",
            [run_id, source],
        )
        if projid is None:
            row = con.execute("SELECT projid FROM runs WHERE run_id = ?", [run_id]).fetchone()
            projid = row[0] if row else None
        if projid is not None:
            con.execute(
                "INSERT OR IGNORE INTO log_names SELECT DISTINCT ?, name, path, vtype FROM _logs",
                [projid],
            )
        con.unregister("_logs")
        return n

    def _ingest_checkpoints(self, con: Any, run_id: str, frames: list[dict]) -> None:
        rows = [row for f in frames if f.get("t") == "ckpt" for row in f["items"]]
        if not rows:
            return
        con.executemany(
            "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                [
                    run_id, r["iteration"], r["object"], r["codec"], r.get("kind"),
                    r.get("base_iteration"), r.get("digest"), r.get("raw_bytes"),
                    r.get("stored_bytes"), r.get("approximate", False), r["status"],
                    r.get("error"),
                ]
                for r in rows
            ],
        )


# Arrow arrays are built over NumPy buffers with from_buffers: pyarrow.array()
# imports pandas on first use, which cost 0.3-0.5 s at the end of every run.
_VCODES = {float: 0, int: 1, bool: 2, str: 3}
_VNAMES = ("float", "int", "bool", "str", "json")
_ARROW_TYPES = {np.dtype(np.int8): pa.int8(), np.dtype(np.int32): pa.int32(),
                np.dtype(np.int64): pa.int64(), np.dtype(np.float64): pa.float64()}


def _validity(valid: Any) -> Any:
    return None if valid is None or valid.all() else pa.py_buffer(
        np.packbits(valid, bitorder="little")
    )


def _numbers(data: Any, valid: Any = None) -> Any:
    """A numeric Arrow array over ``data`` (NumPy); ``valid`` marks non-NULL entries."""
    data = np.ascontiguousarray(data)
    return pa.Array.from_buffers(
        _ARROW_TYPES[data.dtype], len(data), [_validity(valid), pa.py_buffer(data)]
    )


def _bools(data: Any) -> Any:
    return pa.Array.from_buffers(
        pa.bool_(), len(data), [None, pa.py_buffer(np.packbits(data, bitorder="little"))]
    )


def _strings(items: list[str | None]) -> Any:
    """A (large) string Arrow array; None is NULL."""
    encoded = [b"" if x is None else x.encode("utf-8", "replace") for x in items]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    valid = np.fromiter((x is not None for x in items), bool, len(items))
    return pa.Array.from_buffers(
        pa.large_string(), len(items),
        [_validity(valid), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
    )


def _dict_strings(items: list[str]) -> Any:
    """Strings with few distinct values, dictionary-encoded in one C-level pass."""
    index = {k: i for i, k in enumerate(dict.fromkeys(items))}
    codes = np.fromiter(map(index.__getitem__, items), dtype=np.int32, count=len(items))
    return pa.DictionaryArray.from_arrays(_numbers(codes), _strings(list(index)))


def _value_arrays(values: list[Any]) -> tuple[Any, Any, Any]:
    """(vtype, num, txt) Arrow columns; the all-numeric case stays in C."""
    n = len(values)
    types = list(map(type, values))
    kinds = set(types)
    if kinds <= {float, int}:
        codes = np.fromiter(map(_VCODES.__getitem__, types), dtype=np.int8, count=n)
        vtype = pa.DictionaryArray.from_arrays(_numbers(codes), _strings(list(_VNAMES)))
        num = _numbers(np.fromiter(values, dtype=np.float64, count=n))
        return vtype, num, pa.nulls(n, pa.string())
    vtypes, nums, txts = [], [], []
    for value in values:
        kind, num, txt = value_columns(value)
        vtypes.append(kind)
        nums.append(num)
        txts.append(txt)
    valid = np.fromiter((x is not None for x in nums), bool, n)
    data = np.fromiter((0.0 if x is None else x for x in nums), np.float64, n)
    return _dict_strings(vtypes), _numbers(data, valid), _strings(txts)


def _loop_arrays(ctxs: list[tuple], n: int) -> dict[str, Any]:
    """The i1..i6 columns from the loop-index tuples, without a Python loop per record."""
    lengths = np.fromiter(map(len, ctxs), dtype=np.int64, count=n)
    total = int(lengths.sum())
    flat = np.fromiter(chain.from_iterable(ctxs), dtype=np.int32, count=total)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    out: dict[str, Any] = {}
    for depth in range(schema.MAX_DEPTH):
        has = lengths > depth
        if not has.any():
            out[f"i{depth + 1}"] = pa.nulls(n, pa.int32())
            continue
        column = np.zeros(n, dtype=np.int32)
        column[has] = flat[starts[has] + depth]
        out[f"i{depth + 1}"] = _numbers(column, has)
    return out
