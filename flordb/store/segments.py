"""Pending segments: the durable, append-only files a run writes before ingest.

A run appends frames to ``FLORDB_HOME/pending/<segment>.seg`` from its
background writer, so a process killed with SIGKILL keeps everything older than
the writer's last flush. A frame is a 4-byte little-endian length followed by a
pickle of plain Python values (dicts, lists, tuples, str, numbers, None). A
torn final frame (the process died mid-write) is ignored on read; a complete
frame that does not unpickle to plain values is skipped, never the frames after it.

The writer holds an exclusive ``flock`` on its segment for as long as it lives;
the kernel drops it when the process exits, however it exits. An ingester
that can take the lock knows the writer is gone, so it may ingest the segment.
"""
from __future__ import annotations

import fcntl
import io
import os
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LEN = struct.Struct("<I")


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global: a segment can hold only plain values, so loading
    one never imports or executes anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"segment frames hold plain values only, not {module}.{name}")


def pending_dir(home: Path) -> Path:
    path = home / "pending"
    path.mkdir(parents=True, exist_ok=True)
    return path


class SegmentWriter:
    """Appends frames to one segment file and holds its lock."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def append(self, frame: dict[str, Any]) -> None:
        """Append one frame whole, or not at all (a failed write is cut back off)."""
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        blob = _LEN.pack(len(data)) + data
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(blob)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # Disk full mid-frame: leave no torn frame behind the good ones.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)  # also releases the flock
                self._fd = -1


def read_frames(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete frame of a segment, in order; a torn tail is skipped."""
    data = path.read_bytes()
    pos, end = 0, len(data)
    while pos + 4 <= end:
        (size,) = _LEN.unpack_from(data, pos)
        if pos + 4 + size > end:
            break  # torn final frame: the writer died mid-append
        try:
            frame = _PlainUnpickler(io.BytesIO(data[pos + 4 : pos + 4 + size])).load()
        except Exception:  # noqa: BLE001 - garbage may raise anything
            frame = None  # a complete but unreadable frame: lose it, not the rest
        pos += 4 + size
        if isinstance(frame, dict):
            yield frame


def try_lock(path: Path) -> int | None:
    """An fd holding the segment's lock, or None while its writer is alive."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
