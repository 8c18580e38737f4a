"""The run being recorded: ``flor.arg``, ``flor.log``, ``flor.loop``, ``flor.commit``.

A run starts at the first record call of a process (never at import) and ends
at ``flor.commit()``, at interpreter exit, after an uncaught exception (status
``failed``, records kept) or on SIGTERM (status ``terminated``).

Hot path: ``flor.log`` is one attribute load, one type check and one deque
append; the loop context ``(path, indices)`` is a tuple that ``flor.loop``
replaces once per iteration, so every record shares it without copying.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .. import settings
from ..errors import FlorError, RecordError
from ..store.schema import MAX_DEPTH
from ..store.segments import SegmentWriter, pending_dir
from . import kwargs, versions
from .writer import BackgroundWriter, prepare

_PLAIN = frozenset((float, int, str, bool))


class _LogBuffer(Protocol):
    """Where `flor.log` puts records: the writer's deque, or a replay's filter."""

    def append(self, item: Any, /) -> None: ...


_run: Run | None = None
_start_lock = threading.Lock()
_checkpoint_stack: list[dict[str, Any]] = []  # objects of open `with flor.checkpointing`


def registered_objects() -> dict[str, Any]:
    """Objects of every open ``with flor.checkpointing(...)``, by name."""
    objects: dict[str, Any] = {}
    for frame in _checkpoint_stack:
        objects.update(frame)
    return objects


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


def script_path() -> Path | None:
    """The script being run (``sys.argv[0]``), when there is one."""
    main = sys.modules.get("__main__")
    candidate = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "")
    if candidate and candidate not in ("-c", "-m") and Path(candidate).is_file():
        return Path(candidate).resolve()
    return None


class Run:
    """One recorded execution of a script."""

    source = "record"

    def __init__(self, home: Path | None = None, script: Path | None = None):
        # The end-of-run ingest imports pandas, which imports this module; at
        # interpreter exit it could no longer register its atexit hook.
        import concurrent.futures.thread  # noqa: F401

        self.home = home or settings.home()
        self.script = script if script is not None else script_path()
        start_dir = self.script.parent if self.script else Path.cwd()
        self.root = versions.repo_root(start_dir)
        self.projid = versions.projid_of(self.root)
        self.run_id = new_run_id()
        self.pid = os.getpid()
        self.tstamp = time.time()
        self.status = "finished"
        self.error: str | None = None
        self.mode = os.environ.get("FLORDB_MODE", "record")
        self.args: dict[str, Any] = {}
        self.ctx: tuple[str, tuple[int, ...]] = ("", ())
        self.checkpoints: Any = None  # the CheckpointManager of the checkpointed loop
        self.ended = False
        self.filename = (
            self.script.relative_to(self.root).as_posix()
            if self.script and self.script.is_relative_to(self.root)
            else (self.script.name if self.script else "<interactive>")
        )
        self.segment_id = self.make_segment_id()
        segment = SegmentWriter(pending_dir(self.home) / f"{self.segment_id}.seg")
        self.writer = BackgroundWriter(segment)
        self.buffer: _LogBuffer = self.writer.buffer
        segment.append(self.header())
        segment.sync()
        self.writer.start()

    # -------------------------------------------------------------- identity
    def make_segment_id(self) -> str:
        return self.run_id

    def header(self) -> dict[str, Any]:
        version = versions.snapshot_version(self.root)
        self.vid = version.vid
        return {
            "t": "run",
            "source": self.source,
            "run_id": self.run_id,
            "projid": self.projid,
            "repo_path": str(self.root),
            "tstamp": self.tstamp,
            "vid": version.vid,
            "branch": version.branch,
            "head": version.head,
            "filename": self.filename,
            "host": socket.gethostname(),
            "pid": self.pid,
            "argv": list(sys.argv),
            "mode": self.mode,
            "cwd": _relative_cwd(self.root),
        }

    # ------------------------------------------------------------- record API
    def arg(self, name: str, default: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise RecordError(f"flor.arg needs a non-empty string name, got {name!r}")
        if name in self.args:
            return self.args[name]
        text = kwargs.given(name)
        value = default if text is None else kwargs.cast(name, text, default)
        self.args[name] = value
        self.writer.frame({"t": "args", "items": [(name, _plain_arg(value))]})
        return value

    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        if not isinstance(name, str) or not name or "/" in name:
            raise RecordError(f"flor.loop needs a loop name without '/', got {name!r}")
        parent_path, parent_idx = self.ctx
        depth = len(parent_idx)
        if depth >= MAX_DEPTH:
            raise RecordError(
                f"flor.loop({name!r}) is nested {depth + 1} levels deep; flordb records "
                f"at most {MAX_DEPTH} levels of flor.loop"
            )
        return self._iterate(name, iterable, parent_path, parent_idx)

    def _iterate(
        self, name: str, iterable: Iterable[Any], parent_path: str, parent_idx: tuple[int, ...]
    ) -> Iterator[Any]:
        path = f"{parent_path}/{name}" if parent_path else name
        manager = self._checkpoint_manager_for(len(parent_idx), name)
        if manager is not None:
            manager.bind_outer_frame(sys._getframe(1))
        inner_of = self.checkpoints if (
            self.checkpoints is not None and manager is None
            and len(parent_idx) == self.checkpoints.depth + 1
        ) else None
        timed = manager is not None or not parent_idx
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        saved = self.ctx
        i = -1
        last_taken = False
        try:
            t0 = time.perf_counter()
            for i, item in enumerate(iterable):
                self.ctx = (path, parent_idx + (i,))
                yield item
                if timed:
                    seconds = time.perf_counter() - t0
                    is_last = total is not None and i == total - 1
                    last_taken = manager.end_iteration(i, seconds, is_last) if manager else False
                    self.writer.iterations.append((name, i, seconds, last_taken))
                    t0 = time.perf_counter()
            if manager is not None and i >= 0 and not last_taken:
                manager.force(i)  # always keep the last iteration's state
        finally:
            self.ctx = saved
            if inner_of is not None:
                inner_of.capture_locals(sys._getframe(1))

    def _checkpoint_manager_for(self, depth: int, name: str) -> Any:
        if not _checkpoint_stack or self.checkpoints is not None:
            return None
        from ..checkpoint.manager import CheckpointManager

        self.checkpoints = CheckpointManager(
            self, registered_objects(), loop_name=name, depth=depth
        )
        return self.checkpoints

    # ------------------------------------------------------------- lifecycle
    def commit(self) -> None:
        """End the run: flush, wait for checkpoints, ingest into DuckDB."""
        if self.ended or os.getpid() != self.pid:
            return  # already ended, or a forked child (e.g. a DataLoader worker)
        self.ended = True
        overhead = None
        if self.checkpoints is not None:
            overhead = self.checkpoints.close()
        self.writer.close(
            {
                "t": "end",
                "status": self.status,
                "end_time": time.time(),
                "error": self.error,
                "ckpt_overhead": overhead,
            }
        )
        self.after_commit()

    def after_commit(self) -> None:
        from ..store.store import Store

        unused = kwargs.unused()
        if unused:
            print(
                f"flordb: warning: --kwargs {', '.join(unused)} never read by flor.arg",
                file=sys.stderr,
            )
        try:
            report = Store(self.home).ingest_pending(timeout=20.0, quiet=True)
        except FlorError as exc:
            report = None
            print(f"flordb: run {self.run_id} kept pending: {exc}", file=sys.stderr)
        if report is not None and report.pending and _is_pending(self.home, self.segment_id):
            print(
                f"flordb: run {self.run_id} saved; the database is busy, so it lands the "
                "next time flordb opens it",
                file=sys.stderr,
            )
        elif not os.environ.get("FLORDB_QUIET"):
            ck = f", {self.checkpoints.taken} checkpoints" if self.checkpoints else ""
            print(
                f"flordb: recorded run {self.run_id} of {self.projid} "
                f"({self.writer.count} records{ck})",
                file=sys.stderr,
            )


def _relative_cwd(root: Path) -> str | None:
    try:
        return Path.cwd().resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None  # started outside the repository


def _is_pending(home: Path, segment_id: str) -> bool:
    return (pending_dir(home) / f"{segment_id}.seg").exists()


def _plain_arg(value: Any) -> Any:
    if type(value) in _PLAIN or value is None:
        return value
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return str(value)


# ------------------------------------------------------------------ module API
def current() -> Run:
    """The run of this process, started on first use."""
    global _run
    run = _run
    if run is not None and not run.ended:
        return run
    with _start_lock:
        if _run is None or _run.ended:
            # Hooks first: a run that cannot start (no git repository) is a
            # one-line error, not a traceback.
            _install_exit_hooks()
            _run = _make_run()
        return _run


def _make_run() -> Run:
    spec = os.environ.get("FLORDB_REPLAY_SPEC")
    if spec:
        from ..hindsight.session import ReplayRun

        return ReplayRun(Path(spec))
    return Run()


def active() -> Run | None:
    """The run in progress, if any (never starts one)."""
    return _run if _run is not None and not _run.ended else None


def current_context() -> tuple[str, tuple[int, ...]]:
    """(loop path, iteration indices) of the innermost running flor.loop."""
    run = active()
    return run.ctx if run else ("", ())


def arg(name: str, default: Any) -> Any:
    """A hyper-parameter: ``default``, or the value given as ``--kwargs name=value``.

    >>> lr = flor.arg("lr", 1e-3)   # python train.py --kwargs lr=0.01  ->  0.01
    """
    return current().arg(name, default)


def log(name: str, value: Any) -> Any:
    """Record ``value`` under ``name`` in the current loop context; returns ``value``.

    >>> flor.log("loss", loss.item())
    """
    run = _run
    if run is None or run.ended:
        run = current()
    run.buffer.append((name, value if type(value) in _PLAIN else prepare(value), run.ctx))
    return value


def loop(name: str, iterable: Iterable[Any]) -> Iterator[Any]:
    """Yield the items of ``iterable``, naming this loop level ``name``.

    >>> for epoch in flor.loop("epoch", range(5)): ...
    """
    return current().loop(name, iterable)


@contextlib.contextmanager
def checkpointing(**objects: Any) -> Iterator[None]:
    """Register stateful objects, checkpointed at the outer ``flor.loop``'s iteration ends.

    >>> with flor.checkpointing(model=net, optimizer=opt):
    ...     for epoch in flor.loop("epoch", range(5)): ...
    """
    for key, obj in objects.items():
        if obj is None:
            raise RecordError(f"flor.checkpointing({key}=None): pass the object to checkpoint")
    _checkpoint_stack.append(objects)
    try:
        yield
    finally:
        _checkpoint_stack.remove(objects)


def commit() -> None:
    """End the run now (otherwise it ends at interpreter exit)."""
    run = active()
    if run is not None:
        run.commit()


# ------------------------------------------------------------------ exit hooks
_hooks_installed = False


def _install_excepthook() -> None:
    """An uncaught FlorError is one line; an uncaught exception marks the run failed.

    Installed at import, not at run start: a bad ``flor.config(...)`` before the
    first loop is a one-line error too.
    """
    global _excepthook_installed
    if _excepthook_installed:
        return
    _excepthook_installed = True
    previous = sys.excepthook

    def excepthook(kind, exc, tb):  # type: ignore[no-untyped-def]
        run = active()
        if run is not None and not issubclass(kind, KeyboardInterrupt):
            run.status = "failed"
            run.error = "".join(traceback.format_exception_only(kind, exc)).strip()
        elif run is not None:
            run.status = "interrupted"
        if issubclass(kind, FlorError) and not settings.get("debug"):
            print(f"flordb: error: {exc}", file=sys.stderr)
            return
        previous(kind, exc, tb)

    sys.excepthook = excepthook


_excepthook_installed = False
_install_excepthook()


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(commit)
    _install_excepthook()
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

            def on_term(signum, frame):  # type: ignore[no-untyped-def]
                run = active()
                if run is not None:
                    run.status = "terminated"
                raise SystemExit(128 + signum)

            signal.signal(signal.SIGTERM, on_term)
