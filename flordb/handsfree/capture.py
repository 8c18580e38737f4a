"""Stores what a script prints and logs, per loop iteration, as ``stdout`` and ``log``.

Text is buffered per loop level. The runner's loop wrappers tell the capture when an
iteration ends, *before* ``flor.loop`` moves to the next one, so one record per
iteration is emitted while that iteration is still the current loop context. Text of
a level that surrounds a nested loop (an epoch's lines before and after its batches)
stays pending while the nested loop runs and is emitted once, when its own iteration
ends; the run-level text is emitted when the script ends.

The terminal sees exactly what it would without flordb: ``sys.stdout`` becomes a tee
that forwards every write first, and logging records are copied without touching any
logger's handlers or level.
"""
from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

STDOUT = "stdout"
LOG = "log"
LOG_FORMAT = logging.BASIC_FORMAT  # "%(levelname)s:%(name)s:%(message)s", as basicConfig


@dataclass
class _Texts:
    stdout: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def take(self) -> list[tuple[str, str]]:
        """The texts to record, emptied; a trailing newline is the end of the last line."""
        out = []
        for name, chunks in ((STDOUT, self.stdout), (LOG, self.log)):
            text = "".join(chunks)
            chunks.clear()
            text = text.removesuffix("\n")
            if text:
                out.append((name, text))
        return out

    def extend(self, other: _Texts) -> None:
        self.stdout.extend(other.stdout)
        self.log.extend(other.log)


class _Tee:
    """Stands in for ``sys.stdout``: forwards everything, keeps a copy of the text."""

    def __init__(self, stream: TextIO, capture: Capture):
        self._stream = stream
        self._capture = capture

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._capture.add(STDOUT, text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty(), fileno(), buffer, ...: the real stream answers.
        return getattr(self._stream, name)


class _LogCopy(logging.Handler):
    """Formats a record the way ``logging.basicConfig`` would and keeps the line."""

    def __init__(self, capture: Capture):
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._capture.add(LOG, self.format(record) + "\n")
        except Exception:  # noqa: BLE001, S110 - a bad %-format: logging reports it itself
            pass


class Capture:
    """Per-iteration buffers of printed and logged text; ``emit(name, text)`` records one.

    >>> records = []
    >>> cap = Capture(lambda name, text: records.append((name, text)))
    >>> cap.add("stdout", "epoch 0\\n"); cap.end_iteration()
    >>> records
    [('stdout', 'epoch 0')]
    """

    def __init__(self, emit: Callable[[str, str], object]):
        self._emit = emit
        self._levels: list[_Texts] = [_Texts()]  # run level first, innermost loop last
        self._lock = threading.Lock()
        self._local = threading.local()  # `emitting` flag: the record API's own output
        self._tee: _Tee | None = None
        self._saved_stdout: TextIO | None = None
        self._saved_call_handlers: Callable[..., Any] | None = None
        self._handler = _LogCopy(self)
        self._closed = False

    # ---------------------------------------------------------------- text in
    def add(self, name: str, text: str) -> None:
        if not text or self._closed or getattr(self._local, "emitting", False):
            return
        if name == STDOUT and getattr(self._local, "in_logging", False):
            return  # a handler writing a record to stdout: the record is already in `log`
        with self._lock:
            getattr(self._levels[-1], name).append(text)

    def _on_log_record(self, record: logging.LogRecord) -> None:
        if record.name == "flordb" or record.name.startswith("flordb."):
            return  # flordb's own messages are not the script's
        self._handler.handle(record)

    # ---------------------------------------------------------------- loop events
    def enter_loop(self) -> None:
        """A recorded loop starts: its iterations get buffers of their own."""
        with self._lock:
            self._levels.append(_Texts())

    def end_iteration(self) -> None:
        """The current iteration ends; call while it is still the loop context."""
        with self._lock:
            texts = self._levels[-1].take()
        self._send(texts)

    def exit_loop(self) -> None:
        """A recorded loop ended; text its iterator printed after the last item goes up."""
        with self._lock:
            if len(self._levels) > 1:
                done = self._levels.pop()
                self._levels[-1].extend(done)

    def close(self) -> None:
        """Emit the run-level text (call in run context) and stop capturing."""
        with self._lock:
            while len(self._levels) > 1:
                done = self._levels.pop()
                self._levels[-1].extend(done)
            texts = self._levels[0].take()
        try:
            self._send(texts)
        finally:
            self.uninstall()

    def _send(self, texts: list[tuple[str, str]]) -> None:
        self._local.emitting = True
        try:
            for name, text in texts:
                self._emit(name, text)
        finally:
            self._local.emitting = False

    # ---------------------------------------------------------------- install
    def install(self) -> None:
        """Tee ``sys.stdout`` and copy every logging record that a logger handles."""
        self._saved_stdout = sys.stdout
        self._tee = _Tee(sys.stdout, self)
        sys.stdout = self._tee  # type: ignore[assignment]
        # Not a handler on the root logger: one there would make the script's
        # `logging.basicConfig()` a no-op and silence logging's last-resort stderr
        # output, changing what the user sees.
        original = logging.Logger.callHandlers
        capture = self

        def callHandlers(logger: logging.Logger, record: logging.LogRecord) -> None:
            capture._on_log_record(record)
            local = capture._local
            outer = getattr(local, "in_logging", False)
            local.in_logging = True
            try:
                original(logger, record)
            finally:
                local.in_logging = outer

        self._saved_call_handlers = original
        # typeshed types callHandlers as a method; a plain function is what gets bound here
        logging.Logger.callHandlers = callHandlers  # type: ignore[method-assign, assignment]

    def uninstall(self) -> None:
        self._closed = True  # streams the script kept (a StreamHandler) still forward
        if self._saved_call_handlers is not None:
            logging.Logger.callHandlers = self._saved_call_handlers  # type: ignore[method-assign]
            self._saved_call_handlers = None
        if self._tee is not None:
            # A script that replaced sys.stdout itself keeps its own stream.
            if sys.stdout is self._tee:
                sys.stdout = self._saved_stdout  # type: ignore[assignment]
            self._tee = None
            self._saved_stdout = None
