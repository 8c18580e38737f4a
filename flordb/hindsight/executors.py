"""Where replay workers run: local processes by default, or a Ray cluster.

A task is one worker process: ``python SCRIPT ARGS`` in an isolated checkout,
with ``FLORDB_REPLAY_SPEC`` in its environment. The executor only starts tasks,
at most ``workers`` at a time, and reports progress; results come back through
the spec's result file and the pending segment the worker writes.

Locally, workers are forked from a warm interpreter (the *zygote*) that has
already imported the script's installed packages: a replay of a short run
is otherwise mostly ``import torch``, paid again by every worker.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReplayError


@dataclass
class Task:
    label: str
    cmd: list[str]
    cwd: Path
    env: dict[str, str]
    total: int  # planned iterations, for progress
    progress_path: Path
    log_path: Path


@dataclass
class TaskResult:
    task: Task
    returncode: int

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.task.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def _progress(task: Task) -> int:
    try:
        return int(json.loads(task.progress_path.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


ProgressFn = Callable[[Task, int], None]

# Set from another thread (the shell's Ctrl-C) to stop a replay in progress;
# what finished before is kept.
cancelled = threading.Event()


def cancel() -> None:
    """Stop the running replay's workers (callable from any thread)."""
    cancelled.set()


def _check_cancel(stop: Callable[[], object]) -> None:
    if cancelled.is_set():
        cancelled.clear()
        stop()
        raise ReplayError("replay cancelled; values computed so far are kept")


class LocalExecutor:
    """Worker processes on this machine; Ctrl-C stops them all."""

    name = "local"

    def __init__(self, fork: bool | None = None):
        if fork is None:
            fork = os.environ.get("FLORDB_REPLAY_FORK", "1") != "0" and hasattr(os, "fork")
        self.fork = fork

    def run(self, tasks: list[Task], workers: int, on_progress: ProgressFn) -> list[TaskResult]:
        cancelled.clear()  # a Ctrl-C from before this replay is not for it
        queue = list(tasks)
        running: dict[int, tuple[Any, Task]] = {}
        results: list[TaskResult] = []
        forkable = [t for t in tasks if _forkable(t)] if self.fork else []
        zygote = _Zygote.start(forkable) if forkable else None
        key = 0
        try:
            while queue or running:
                while queue and len(running) < max(1, workers):
                    task = queue.pop(0)
                    if zygote is not None and zygote.alive and _forkable(task):
                        proc: Any = zygote.spawn(task)
                    else:
                        log = open(task.log_path, "wb")
                        proc = subprocess.Popen(
                            task.cmd, cwd=task.cwd, env=task.env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                        log.close()
                    key += 1
                    running[key] = (proc, task)
                time.sleep(0.1)

                def stop_all() -> None:
                    for p, _ in running.values():
                        _stop(p)

                _check_cancel(stop_all)
                for k, (proc, task) in list(running.items()):
                    on_progress(task, _progress(task))
                    if proc.poll() is not None:
                        del running[k]
                        results.append(TaskResult(task, proc.returncode))
        except BaseException:
            for proc, _ in running.values():
                _stop(proc)
            raise
        finally:
            if zygote is not None:
                zygote.close()
        return results


# ------------------------------------------------------------------ the zygote
# Packages whose heavy parts a script reaches only lazily (an optimizer's
# constructor imports torch._dynamo): warm those too.
_PRELOAD_ALSO = {"torch": ("torch.optim", "torch._dynamo")}


def _forkable(task: Task) -> bool:
    """``python SCRIPT.py ARGS`` (not ``python -m ...``) with this interpreter."""
    cmd = task.cmd
    return len(cmd) >= 2 and cmd[0] == sys.executable and not cmd[1].startswith("-")


def _preloads(script: Path) -> list[str]:
    """Installed packages the script imports (never its own modules, nor flordb,
    whose import reads the command line)."""
    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    tops: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.append(node.module.split(".")[0])
    local = script.resolve().parent
    out: list[str] = []
    for name in dict.fromkeys(tops):
        if name == "flordb" or name in sys.builtin_module_names:
            continue
        if (local / name).exists() or (local / f"{name}.py").exists():
            continue  # the script's own module: its code is per checkout
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            out += [name, *_PRELOAD_ALSO.get(name, ())]
    return out


class _Forked:
    """A worker forked by the zygote: the subset of ``Popen`` the executor uses."""

    def __init__(self, zygote: _Zygote, key: int):
        self.zygote, self.key = zygote, key

    @property
    def pid(self) -> int | None:
        return self.zygote.pids.get(self.key)

    @property
    def returncode(self) -> int | None:
        return self.zygote.codes.get(self.key)

    def poll(self) -> int | None:
        if self.key not in self.zygote.codes and not self.zygote.alive:
            self.zygote.codes[self.key] = -signal.SIGKILL  # lost with its zygote
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("worker", timeout or 0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]


class _Zygote:
    """A Python process that imports the scripts' packages once, then forks a
    worker per task (``python SCRIPT ARGS`` semantics: ``__main__``, argv,
    sys.path, cwd, environment, a new session, output to the task's log)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pids: dict[int, int] = {}
        self.codes: dict[int, int] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="flordb-zygote", daemon=True)
        self.reader.start()

    @classmethod
    def start(cls, tasks: list[Task]) -> _Zygote | None:
        preload = list(dict.fromkeys(
            name for script in {Path(t.cmd[1]) for t in tasks} for name in _preloads(script)
        ))
        env = {k: v for k, v in tasks[0].env.items() if k != "FLORDB_REPLAY_SPEC"}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from flordb.hindsight.executors import _zygote; _zygote()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=env, cwd=tasks[0].log_path.parent,
            )
            zygote = cls(proc)
            zygote._send({"preload": preload})
        except OSError:
            return None
        return zygote

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def spawn(self, task: Task) -> _Forked:
        with self.lock:
            self.count += 1
            key = self.count
        self._send({"id": key, "argv": task.cmd[1:], "cwd": str(task.cwd), "env": task.env,
                    "log": str(task.log_path)})
        return _Forked(self, key)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "pid" in msg:
                self.pids[msg["id"]] = msg["pid"]
            if "rc" in msg:
                self.codes[msg["id"]] = msg["rc"]

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the zygote exits once its workers have
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _zygote() -> None:
    """Main loop of the zygote process (see ``_Zygote``)."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops workers itself

    def send(message: dict[str, Any]) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    buffer = b""
    requests: list[dict[str, Any]] = []

    def read_lines() -> bool:
        nonlocal buffer
        chunk = os.read(0, 65536)
        if not chunk:
            return False
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            requests.append(json.loads(line))
        return True

    while not requests and read_lines():
        pass
    for name in requests.pop(0).get("preload", []) if requests else []:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001, S110 - it fails again, visibly, in the worker
            pass
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    children: dict[int, int] = {}
    open_ = True
    while open_ or children or requests:
        while requests:
            req = requests.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                sel.close()
                _worker(req)  # raises SystemExit: the interpreter exits as a script's would
            children[pid] = req["id"]
            send({"id": req["id"], "pid": pid})
        if open_:
            if sel.select(timeout=0.05):
                open_ = read_lines()
        else:
            time.sleep(0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            send({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)})
    os._exit(0)  # nothing to flush; finalising torch would only cost time


def _worker(req: dict[str, Any]) -> None:
    """In a freshly forked child: become ``python SCRIPT ARGS`` and run it."""
    import builtins
    import io
    import random
    import types

    os.setsid()
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    script = os.path.abspath(req["argv"][0])
    sys.argv = list(req["argv"])
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    # Fresh seeds, as a fresh interpreter would have (the zygote's are shared).
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec")
        exec(code, main.__dict__)  # noqa: S102 - what `python SCRIPT` does
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - reported as the interpreter would
        sys.excepthook(*sys.exc_info())
        raise SystemExit(1) from None
    raise SystemExit(0)


def _stop(proc: Any) -> None:
    if proc.pid is None:
        return  # a fork the zygote has not reported yet: it exits with the zygote
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ray_task(cmd: list[str], cwd: str, env: dict[str, str], log_path: str) -> int:
    with open(log_path, "wb") as log:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode


class RayExecutor:
    """Worker processes as Ray tasks (one CPU each).

    The repository checkout, the spec files and ``FLORDB_HOME`` must be on a
    filesystem every node sees (e.g. NFS); results merge into DuckDB on this
    machine through the same pending-segment path as recording.
    """

    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ReplayError(
                "--executor ray needs Ray; install it with `pip install 'flordb[ray]'`"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)

    def run(self, tasks: list[Task], workers: int, on_progress: ProgressFn) -> list[TaskResult]:
        cancelled.clear()
        remote = self.ray.remote(num_cpus=1)(_ray_task)
        pending = {}
        for task in tasks:
            ref = remote.remote(task.cmd, str(task.cwd), task.env, str(task.log_path))
            pending[ref] = task
        results = []
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), timeout=0.2)
                _check_cancel(lambda: [self.ray.cancel(r, force=True) for r in pending])
                for task in pending.values():
                    on_progress(task, _progress(task))
                for ref in done:
                    task = pending.pop(ref)
                    results.append(TaskResult(task, self.ray.get(ref)))
        except KeyboardInterrupt:
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise
        return results


def make_executor(name: str = "local", address: str | None = None):  # type: ignore[no-untyped-def]
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise ReplayError(f"unknown executor {name!r}; use local or ray")


def python() -> str:
    return sys.executable
