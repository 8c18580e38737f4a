"""Runs an unmodified script as a recorded run: ``flordb run SCRIPT [ARGS ...]``.

The instrumented script calls back into this module (imported into it as
``__flor_hf__``): :func:`outer_loop` and :func:`loop` return the :class:`Level` that
turns its training loops into ``flor.loop`` and registers the stateful objects in
scope with ``flor.checkpointing``.
The script otherwise runs as ``python SCRIPT ARGS`` would run it: as ``__main__``,
with its own ``sys.argv``, its directory first on ``sys.path``, its exit status.
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import functools
import os
import sys
import tokenize
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

import flordb as flor
from flordb.errors import FlorError, RecordError
from flordb.handsfree.capture import Capture
from flordb.handsfree.instrument import explain as explain_text
from flordb.handsfree.instrument import instrument

T = TypeVar("T")


class _State:
    """What the running script is doing; one hands-free script per process at a time."""

    def __init__(self) -> None:
        self.running = False
        self.outer_active = False
        self.inner_active = False
        self.capture: Capture | None = None


_state = _State()


def running() -> bool:
    """Whether a script is running under ``flordb run`` in this process."""
    return _state.running


# ------------------------------------------------------------------ loop levels
class Level:
    """One instrumented loop while it runs (``with __flor_hf__.outer_loop(...) as level``).

    An active level turns the loop into ``flor.loop(name, X)`` and tells the output
    capture where iterations end; an inactive one passes everything through.
    """

    def __init__(self, name: str, outer: bool, scope: Mapping[str, Any] | None = None):
        self.name = name
        self.outer = outer
        self._scope = scope
        self.active = False
        self._checkpointing: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> Self:
        if self.outer:
            # Entered again from inside itself (recursion): one outer level is enough.
            self.active = not _state.outer_active
        else:
            # A helper such as train() also called before or after the training loop
            # (warm-up, final evaluation) iterates there as usual.
            self.active = _state.outer_active and not _state.inner_active
        if not self.active:
            return self
        if self.outer:
            # Entered even with no objects: RNG states are checkpointed all the same.
            self._checkpointing = flor.checkpointing(**stateful(self._scope or {}))
            self._checkpointing.__enter__()
            _state.outer_active = True
        else:
            _state.inner_active = True
        if _state.capture is not None:
            _state.capture.enter_loop()
        return self

    def items(self, iterable: Iterable[T]) -> Iterable[T]:
        """What the ``for`` iterates; the user's frame drives flor.loop's generator."""
        return flor.loop(self.name, iterable) if self.active else iterable

    def end_iteration(self) -> None:
        """Runs in the loop body's ``finally``: the iteration is still the loop context."""
        if self.active and _state.capture is not None:
            _state.capture.end_iteration()

    def __exit__(self, *exc_info: object) -> None:
        if not self.active:
            return
        self.active = False
        try:
            if _state.capture is not None:
                _state.capture.exit_loop()
        finally:
            if self.outer:
                _state.outer_active = False
                if self._checkpointing is not None:
                    self._checkpointing.__exit__(*exc_info)  # type: ignore[arg-type]
            else:
                _state.inner_active = False


def outer_loop(name: str, scope: Mapping[str, Any]) -> Level:
    """The checkpointed level: ``with flor.checkpointing(**stateful(scope))`` + ``flor.loop``."""
    return Level(name, outer=True, scope=scope)


def loop(name: str) -> Level:
    """The inner level: ``flor.loop(name, X)`` while the outer level runs."""
    return Level(name, outer=False)


# ------------------------------------------------------------------ stateful objects
def _stateful_types() -> tuple[type, ...]:
    torch = sys.modules.get("torch")
    if torch is None:
        return ()  # the script did not import torch, so nothing in scope is a torch object
    kinds: list[type] = []
    for path in (
        "nn.Module",
        "optim.Optimizer",
        "optim.lr_scheduler.LRScheduler",
        "optim.lr_scheduler._LRScheduler",
        "optim.lr_scheduler.ReduceLROnPlateau",  # not an LRScheduler before torch 2.2
        "amp.GradScaler",
    ):
        obj: Any = torch
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            kinds.append(obj)
    return tuple(kinds)


def _has_state(obj: Any) -> bool:
    try:
        return len(obj.state_dict()) > 0
    except Exception:  # noqa: BLE001
        return True  # let flor.checkpointing decide what it can save


def stateful(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The objects of ``scope`` to checkpoint, by variable name.

    Torch modules, optimizers, LR schedulers and GradScalers; in a method, also those
    held by ``self`` (``self.model`` is named ``model``). Objects without state (a loss
    module, a disabled GradScaler), second names for the same object and modules that
    are part of another registered module are left out.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> sorted(stateful({"net": net, "alias": net, "loss_fn": torch.nn.MSELoss(), "lr": 0.1}))
    ['net']
    """
    kinds = _stateful_types()
    if not kinds:
        return {}
    found: dict[str, Any] = {}
    ids: set[int] = set()

    def add(name: str, obj: Any) -> None:
        if id(obj) not in ids and _has_state(obj):
            ids.add(id(obj))
            found[name] = obj

    for name, obj in list(scope.items()):
        if not name.startswith("__") and isinstance(obj, kinds):
            add(name, obj)
    owner = scope.get("self")
    if owner is not None and not isinstance(owner, kinds):
        for attr, obj in list(getattr(owner, "__dict__", {}).items()):
            if not attr.startswith("__") and isinstance(obj, kinds):
                add(attr if attr not in scope and attr not in found else f"self_{attr}", obj)
    torch = sys.modules["torch"]
    modules = [obj for obj in found.values() if isinstance(obj, torch.nn.Module)]
    for name, obj in list(found.items()):
        if isinstance(obj, torch.nn.Module) and any(
            other is not obj and any(sub is obj for sub in other.modules()) for other in modules
        ):
            del found[name]  # already saved as part of the module that holds it
    return found


# ------------------------------------------------------------------ argparse
def _record_namespace(namespace: argparse.Namespace) -> None:
    # flor.arg returns the default when recording and the recorded value when
    # replaying, so writing its answer back makes a replay see the original args.
    for key, value in list(vars(namespace).items()):
        if type(value) in (bool, int, float, str):
            setattr(namespace, key, flor.arg(key, value))


def _patch_argparse() -> Callable[[], None]:
    """Record the script's parsed arguments as flor args until the returned undo runs."""
    parser_cls = argparse.ArgumentParser
    original_known = parser_cls.parse_known_args
    original_args = parser_cls.parse_args
    depth = [0]  # parse_args calls parse_known_args; subparsers call it again

    @functools.wraps(original_known)
    def parse_known_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        try:
            namespace, extras = original_known(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            _record_namespace(namespace)
        return namespace, extras

    @functools.wraps(original_args)
    def parse_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        try:
            namespace = original_args(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        # Recorded only once parsing succeeded: a usage error records no run.
        if depth[0] == 0:
            _record_namespace(namespace)
        return namespace

    parser_cls.parse_known_args = parse_known_args  # type: ignore[method-assign]
    parser_cls.parse_args = parse_args  # type: ignore[method-assign,assignment]

    def undo() -> None:
        parser_cls.parse_known_args = original_known  # type: ignore[method-assign]
        parser_cls.parse_args = original_args  # type: ignore[method-assign]

    return undo


# ------------------------------------------------------------------ running
def run_script(path: str, argv: list[str], explain: bool = False) -> int:
    """Run the script at ``path`` with ``argv`` as a recorded run; return its exit status.

    >>> run_script("train.py", ["--epochs", "2"])        # doctest: +SKIP
    0
    >>> run_script("train.py", [], explain=True)  # doctest: +SKIP
    """
    filename = os.path.abspath(path)
    try:
        with tokenize.open(filename) as handle:
            source = handle.read()
    except (OSError, SyntaxError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RecordError(f"cannot read script {path!r}: {reason}; pass a Python file") from exc
    try:
        inst = instrument(source, filename)
    except SyntaxError as exc:
        # What python itself prints for a script that does not parse.
        traceback.print_exception(type(exc), exc, None)
        return 1
    if explain:
        print(explain_text(inst, display_name=path))
        return 0
    return _execute(inst.code, path, filename, argv)


def _execute(code: types.CodeType, path: str, filename: str, argv: list[str]) -> int:
    if _state.running:
        raise RecordError(f"cannot run {path!r}: a script is already running under flordb run")
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=filename, __builtins__=builtins, __cached__=None, __loader__=None,
        __package__=None, __spec__=None,
    )
    saved_argv, saved_path = sys.argv, list(sys.path)
    # The run's header says how to re-execute it: replay runs hands-free runs again
    # through `flordb run`. A mode set by the caller (a replay worker) is kept.
    saved_mode = os.environ.get("FLORDB_MODE")
    if saved_mode is None:
        os.environ["FLORDB_MODE"] = "handsfree"
    saved_main = sys.modules.get("__main__")
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(filename))
    # Classes the script defines must pickle as __main__.X (torch.save, DataLoader workers).
    sys.modules["__main__"] = module
    capture = Capture(_emit)
    _state.running, _state.capture = True, capture
    _state.outer_active = _state.inner_active = False
    capture.install()
    undo_argparse = _patch_argparse()
    status = 0
    try:
        try:
            exec(code, module.__dict__)  # noqa: S102 - running the script is the point
        except SystemExit as exc:
            status = _exit_status(exc)
        except FlorError:
            raise
        except Exception as exc:  # noqa: BLE001 - the script's error, reported as python would
            _mark_failed(exc)
            _print_user_traceback(exc, filename)
            status = 1
        finally:
            undo_argparse()
            capture.close()  # emits the run-level text while no loop is current
    finally:
        _state.running, _state.capture = False, None
        _state.outer_active = _state.inner_active = False
        sys.argv, sys.path[:] = saved_argv, saved_path
        if saved_mode is None:
            os.environ.pop("FLORDB_MODE", None)
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        else:
            sys.modules.pop("__main__", None)
    flor.commit()  # a no-op when the script recorded nothing
    return status


def _emit(name: str, text: str) -> None:
    flor.log(name, text)


def _exit_status(exc: SystemExit) -> int:
    # The same mapping as the interpreter's own handling of SystemExit.
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _mark_failed(exc: BaseException) -> None:
    from flordb.record import run as record_run

    active = record_run.active()
    if active is not None:
        active.status = "failed"
        active.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _print_user_traceback(exc: BaseException, filename: str) -> None:
    """Print the traceback python would print: from the script's frames on."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
