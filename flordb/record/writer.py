"""The background writer: makes buffered records durable off the training thread.

``flor.log`` appends ``(name, value, ctx)`` to a deque and returns. Every
``FLUSH_SECONDS`` this thread drains the deque, resolves values that could not
be converted on the hot path (tensors, NumPy scalars), and appends one frame to
the run's pending segment.
"""
from __future__ import annotations

import json
import sys
import threading
from collections import deque
from typing import Any

from ..store.segments import SegmentWriter

FLUSH_SECONDS = 0.5
_PLAIN = (float, int, str, bool, type(None))


def prepare(value: Any) -> Any:
    """Hot-path step for values that are not plain: never blocks on a device."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_cuda:
            # Copy without synchronising the training thread; the writer waits
            # on the event instead.
            host = value.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return _Pending(host, event)
        return _Pending(value.clone(), None)
    if isinstance(value, (list, dict, tuple)):
        # Snapshot containers now: the script may mutate them after logging.
        return json.loads(json.dumps(value, default=_jsonable))
    return value


class _Pending:
    """A tensor whose Python value the writer resolves."""

    __slots__ = ("event", "tensor")

    def __init__(self, tensor: Any, event: Any):
        self.tensor = tensor
        self.event = event

    def resolve(self) -> Any:
        if self.event is not None:
            self.event.synchronize()
        t = self.tensor
        return t.item() if t.numel() == 1 else t.tolist()


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return value.tolist()
    return str(value)


def resolve(value: Any) -> Any:
    """Writer-side conversion to a plain Python value."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is _Pending:
        return value.resolve()
    # Subclasses of the plain types (numpy.float64, IntEnum, str enums) must
    # become the base type: a segment frame holds plain values only, and the
    # reader refuses any other class.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if kind in (list, dict):
        return value
    value = _jsonable(value)
    if type(value) in _PLAIN:
        return value
    # .item()/.tolist() may still yield other classes (datetime, Decimal).
    return json.loads(json.dumps(value, default=str))


class BackgroundWriter(threading.Thread):
    """Drains the record buffer into the segment every FLUSH_SECONDS."""

    def __init__(self, segment: SegmentWriter):
        super().__init__(name="flordb-writer", daemon=True)
        self.segment = segment
        self.buffer: deque = deque()
        # (loop, iteration, seconds, checkpointed) of outer iterations, batched like records
        self.iterations: deque = deque()
        self._lock = threading.Lock()  # one drainer at a time (thread, or close)
        self._stop_event = threading.Event()
        self._held: list[dict[str, Any]] = []  # frames a failed write could not append
        self._warned = False
        self.count = 0

    def run(self) -> None:
        # The end-of-run ingest's imports (pandas, duckdb: ~0.5-1 s of mostly
        # GIL-held work) are left to the end of the run: done here they slowed
        # the training thread through the first second (bench/checkpoint.py).
        while not self._stop_event.wait(FLUSH_SECONDS):
            self.flush()

    def frame(self, frame: dict[str, Any]) -> None:
        """Append a non-log frame (args, iterations, checkpoint manifests) in order."""
        with self._lock:
            self._drain()
            self._append(frame)

    def _append(self, frame: dict[str, Any]) -> bool:
        """Append, retrying held frames first; on a write error hold it in memory.

        A full disk must not lose records: they stay in memory and are retried
        at every flush until the run ends.
        """
        self._held.append(frame)
        try:
            while self._held:
                self.segment.append(self._held[0])
                self._held.pop(0)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(
                    f"flordb: warning: cannot write records to {self.segment.path} ({exc.strerror}); "
                    "keeping them in memory and retrying",
                    file=sys.stderr,
                )
            return False
        return True

    def flush(self) -> None:
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        iters = self.iterations
        if iters:
            pop_it = iters.popleft
            self._append({"t": "iter", "items": [pop_it() for _ in range(len(iters))]})
        buf = self.buffer
        n = len(buf)
        if n == 0:
            return
        pop = buf.popleft
        items = [pop() for _ in range(n)]
        names = [it[0] for it in items]
        values = [v if type(v) in (float, int, str) else resolve(v) for _, v, _ in items]
        paths = [it[2][0] for it in items]
        ctxs = [it[2][1] for it in items]
        self._append({"t": "logs", "names": names, "values": values, "paths": paths, "ctxs": ctxs})
        self.count += n

    def close(self, end_frame: dict[str, Any]) -> None:
        """Flush everything, append the end frame, release the segment."""
        self._stop_event.set()
        if self.is_alive():
            self.join()
        with self._lock:
            self._drain()
            if not self._append(end_frame):
                lost = sum(len(f.get("names", ())) for f in self._held)
                print(
                    f"flordb: error: {lost} records could not be written to "
                    f"{self.segment.path}; free disk space before the next run",
                    file=sys.stderr,
                )
            try:
                self.segment.close()
            except OSError:
                pass
