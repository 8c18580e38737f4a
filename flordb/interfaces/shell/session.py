"""``flordb shell``: the read-eval-print loop, interactive or fed from a pipe.

Every statement opens its own connection and closes it when done, so training
runs that finish while the shell is open can still write to the database.
The statement runs in a worker thread; the main thread waits, so Ctrl-C
(SIGINT) lands there and interrupts DuckDB with ``con.interrupt()``. A worker
that needs to ask the user something (the engine's backfill confirmation)
hands the question to the main thread through ``confirm``.

Only prompt_toolkit and Pygments load before the first prompt; the query
engine (DuckDB, sqlglot, pandas) loads in the background or with the first
statement, and matplotlib with the first ``.plot``.
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

from ... import settings
from ...errors import FlorError, QueryError
from . import commands, display
from .catalog import Metadata
from .completer import SQLCompleter
from .statements import is_command, split

HISTORY_FILE = "shell_history"
BANNER = "flordb shell: SQL ends with ';', .help lists commands, Ctrl-D leaves."

_active: Shell | None = None  # the shell whose main thread answers ``confirm``


def confirm(message: str) -> bool:
    """Ask the person at the shell a yes/no question; ``False`` unless they say yes.

    The engine calls this (with ``interactive=True``) before a long backfill. It
    may be called from the statement's worker thread: the question is then
    asked by the shell's main thread, which owns the terminal.
    """
    shell = _active
    if shell is not None:
        return shell.confirm(message)
    if not (display.is_tty(sys.stdin) and display.is_tty(sys.stderr)):
        return False
    try:
        answer = input(f"{message} [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


class _LazyConnection:
    """A connection that opens on first use and can be interrupted from another thread.

    Passed as ``con=`` to ``engine.execute``: the engine's backfill runs before
    anything touches the connection, so none is held open while replay writes.
    Only the worker thread opens and closes it; the main thread only interrupts.
    """

    def __init__(self, write: bool):
        self._write = write
        self._stack = contextlib.ExitStack()
        self._con: Any = None
        self.cancelled = False

    def _open(self) -> Any:
        if self.cancelled:
            raise QueryError("cancelled")
        if self._con is None:
            from ...query import engine

            self._con = self._stack.enter_context(engine.connection(write=self._write))
        return self._con

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)

    def interrupt(self) -> None:
        """Stop the running query; ``_wait`` repeats it, as one sent too early is lost."""
        from ...hindsight.executors import cancel

        cancel()  # a backfill in progress stops its workers too
        self.cancelled = True
        con = self._con
        if con is not None:
            con.interrupt()

    def close(self) -> None:
        self._con = None
        self._stack.close()


class Shell:
    """Settings and state of one shell session; runs statements and shows results."""

    def __init__(
        self,
        *,
        write: bool = False,
        backfill: bool = True,
        interactive: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        width: int | None = None,
        height: int | None = None,
        pt_input: Any = None,
        pt_output: Any = None,
    ):
        self.write = write
        self.backfill = backfill
        self.mode = "table"
        self.timer = False
        self.interactive = interactive
        self.running = True
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._width, self._height = width, height
        self._pt_input, self._pt_output = pt_input, pt_output
        self.completer = SQLCompleter(commands=commands.completions())
        self._db_lock = threading.RLock()  # one connection at a time in this process
        self._questions: queue.Queue[tuple[str, threading.Event, list[bool]]] = queue.Queue()
        self._loader: threading.Thread | None = None
        self._background: list[threading.Thread] = []
        self._current: _LazyConnection | None = None  # the last statement's connection

    # ------------------------------------------------------------------ output
    def echo(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, message: str) -> None:
        self.out.flush()
        self.err.write(f"flordb: error: {message}\n")
        self.err.flush()

    def size(self) -> tuple[int, int]:
        """(columns, lines) of the terminal; fixed in tests."""
        if self._width and self._height:
            return self._width, self._height
        import shutil

        cols, lines = shutil.get_terminal_size((80, 24))
        return self._width or cols, self._height or lines

    def show(self, result: display.ResultLike | None, seconds: float, timed: bool = True) -> None:
        """Print a result in the current mode: fitted, elided and paged when interactive."""
        if result is not None and result.columns:
            if self.interactive and self.mode == "table":
                rows, total = display.sample(result, display.MAX_ROWS)
                text = display.render(self.mode, result.columns, rows, width=self.size()[0],
                                      total=total)
            else:
                rows = result.rows
                total = len(rows)
                text = display.render(self.mode, result.columns, rows)
            if self.mode == "table":
                note = display.footer(total, seconds if self.timer else None)
                if self.interactive:
                    text += "\n" + note
                else:
                    self.err.write(note + "\n")
            elif self.timer:
                self.err.write(f"Time: {seconds:.3f}s\n")
            if (self.interactive and display.is_tty(self.out)
                    and display.needs_pager(text, *self.size())):
                display.page(text, self.out)
            else:
                self.echo(text)
        elif self.timer and timed:
            self.echo(f"Time: {seconds:.3f}s")

    # ------------------------------------------------------------------ running
    def run_text(self, text: str) -> bool:
        """Run every statement in ``text``; False at the first error (which is reported)."""
        for statement in split(text):
            if statement.rstrip(";").strip().lower() in ("quit", "exit"):
                self.running = False
            elif not self.run_one(statement):
                return False
            if not self.running:
                break
        return True

    def run_one(self, statement: str) -> bool:
        start = time.perf_counter()
        try:
            if is_command(statement):
                result = commands.dispatch(self, statement)
            else:
                result = self.query(statement)
                if self.interactive:
                    self.refresh(wait=False)  # new runs or tables: new completions
            self.show(result, time.perf_counter() - start, timed=not is_command(statement))
            return True
        except FlorError as exc:
            if _debug():
                traceback.print_exc(file=self.err)
            self.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not end the session
            if _debug():
                traceback.print_exc(file=self.err)
            self.error(f"{type(exc).__name__}: {exc}")
        return False

    @contextlib.contextmanager
    def database(self) -> Iterator[None]:
        """Exclusive use of the database within this process (metadata loads wait)."""
        with self._db_lock:
            yield

    def query(self, sql: str, backfill: bool | None = None) -> Any:
        """Run SQL in a worker thread; Ctrl-C in the main thread cancels it."""
        con = _LazyConnection(self.write)
        box: dict[str, Any] = {}
        use_backfill = self.backfill if backfill is None else backfill

        def work() -> None:
            from ...query import engine

            try:
                with self._db_lock:
                    box["result"] = engine.execute(
                        sql, backfill=use_backfill, write=self.write, con=con,
                        interactive=self.interactive, confirm=self.confirm,
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                box["error"] = exc
            finally:
                con.close()

        worker = self._spawn(work, "flordb-statement")
        self._current = con
        self._wait(worker, con)
        if con.cancelled:
            raise QueryError("cancelled (Ctrl-C)")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _wait(self, worker: threading.Thread, con: _LazyConnection) -> None:
        """Wait for the worker, answering its questions; Ctrl-C interrupts its query."""
        cancelled_at: float | None = None
        told = False
        while worker.is_alive():
            try:
                self._answer_questions()
                worker.join(0.05)
                if cancelled_at is not None:
                    con.interrupt()  # again: an interrupt before the query started is lost
                    if not told and time.monotonic() - cancelled_at > 1.0:
                        self.err.write("cancelling... (Ctrl-C again to stop waiting)\n")
                        self.err.flush()
                        told = True
            except KeyboardInterrupt:
                if told:
                    self.err.write("flordb: the statement goes on in the background\n")
                    return
                cancelled_at = cancelled_at or time.monotonic()
                con.interrupt()

    # ------------------------------------------------------------------ questions
    def confirm(self, message: str) -> bool:
        """Ask yes/no at the prompt; from a worker thread, through the main thread."""
        if not self.interactive:
            return False
        if threading.current_thread() is threading.main_thread():
            return self._ask(message)
        done, answer = threading.Event(), [False]
        self._questions.put((message, done, answer))
        done.wait()
        return answer[0]

    def _answer_questions(self) -> None:
        while True:
            try:
                message, done, answer = self._questions.get_nowait()
            except queue.Empty:
                return
            try:
                answer[0] = self._ask(message)
            finally:
                done.set()

    def _ask(self, message: str) -> bool:
        from prompt_toolkit import PromptSession

        session: PromptSession[str] = PromptSession(input=self._pt_input, output=self._pt_output)
        try:
            text = session.prompt(f"{message} [y/N] ")
        except (EOFError, KeyboardInterrupt):
            return False
        return text.strip().lower() in ("y", "yes")

    # ------------------------------------------------------------------ metadata
    @property
    def metadata(self) -> Metadata:
        return self.completer.metadata

    def refresh(self, wait: bool = True) -> Metadata:
        """Reload tables and columns for completion (in the background unless ``wait``)."""
        if not wait:
            if self._loader is None or not self._loader.is_alive():
                self._loader = self._spawn(self._load, "flordb-catalog")
            return self.metadata
        self._load(raise_errors=True)
        return self.metadata

    def _load(self, raise_errors: bool = False) -> None:
        from ...store.store import Store

        try:
            with self._db_lock, Store().connect(write=False, timeout=2.0) as con:
                from .catalog import load

                self.completer.metadata = load(con)
        except Exception:  # completion just stays as it was
            if raise_errors:
                raise

    # ------------------------------------------------------------------ loops
    def batch(self, text: str) -> int:
        """Run a script (stdin not a terminal); exit status 1 at the first error."""
        try:
            for statement in split(text):
                if statement.rstrip(";").strip().lower() in ("quit", "exit"):
                    break
                if not self.run_one(statement):
                    return 1
                if not self.running:
                    break
            return 0
        finally:
            self.close()

    def session(self) -> Any:
        """The prompt_toolkit ``PromptSession``, with history under ``FLORDB_HOME``."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.history import FileHistory

        from . import keys, style

        return PromptSession(
            message=lambda: style.prompt(self),
            multiline=True,
            prompt_continuation=style.continuation,
            lexer=style.lexer(),
            style=style.style(),
            completer=self.completer,
            complete_while_typing=True,
            auto_suggest=AutoSuggestFromHistory(),
            history=FileHistory(str(settings.home() / HISTORY_FILE)),
            key_bindings=keys.bindings(),
            bottom_toolbar=lambda: style.toolbar(self),
            enable_history_search=False,
            include_default_pygments_style=False,
            input=self._pt_input,
            output=self._pt_output,
        )

    def interact(self, session: Any = None) -> int:
        """The read-eval-print loop; returns the exit status."""
        global _active
        session = session or self.session()
        self.echo(BANNER)
        previous, _active = _active, self
        # Load completions once the first prompt is on screen, not before it.
        session.app.after_render += self._start_loading
        stack = contextlib.ExitStack()
        try:
            if self._pt_input is None:
                stack.enter_context(_typeahead(sys.stdin))
            while self.running:
                try:
                    text = session.prompt()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if text.strip():
                    try:
                        self.run_text(text)
                    except KeyboardInterrupt:  # Ctrl-C outside a running query
                        self.error("cancelled (Ctrl-C)")
        finally:
            stack.close()
            _active = previous
            self.close()
        return 0

    def _spawn(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._background = [t for t in self._background if t.is_alive()] + [thread]
        thread.start()
        return thread

    def close(self, timeout: float = 10.0) -> None:
        """Wait for background work: a thread killed inside DuckDB at exit aborts Python."""
        deadline = time.monotonic() + timeout
        if self._current is not None and any(
                t.name == "flordb-statement" and t.is_alive() for t in self._background):
            self._current.interrupt()  # one left running by a second Ctrl-C
        for thread in self._background:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _start_loading(self, app: Any) -> None:
        app.after_render -= self._start_loading
        self._spawn(self._warm_up, "flordb-warm-up")

    def _warm_up(self) -> None:
        """Completions for the first statement, and pandas so that it answers at once."""
        self._load()
        with contextlib.suppress(ImportError):
            import pandas  # noqa: F401


@contextlib.contextmanager
def _typeahead(stream: TextIO) -> Iterator[None]:
    """Keep the terminal out of line mode between prompts, for the whole session.

    While a statement runs, the terminal would otherwise be in line mode: keys
    typed ahead would echo into the results and a Ctrl-D would end the
    input stream. Without line mode they wait, unseen, for the next prompt
    (prompt_toolkit restores this mode after each prompt). Ctrl-C still
    sends SIGINT, which cancels the statement.
    """
    try:
        import termios
        import tty

        fd = stream.fileno()
        before = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):
        yield
        return
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


def _debug() -> bool:
    try:
        return bool(settings.get("debug"))
    except FlorError:
        return False


def main(write: bool = False) -> int:
    """``flordb shell [--write]``: interactive on a terminal, batch mode on a pipe."""
    if not display.is_tty(sys.stdin):
        return Shell(write=write).batch(sys.stdin.read())
    return Shell(write=write, interactive=True).interact()
