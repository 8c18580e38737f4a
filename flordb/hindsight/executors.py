"""Where replay workers run: local processes by default, or a Ray cluster.

A task is one worker process: ``python SCRIPT ARGS`` in an isolated checkout,
with ``FLORDB_REPLAY_SPEC`` in its environment. The executor only starts tasks,
at most ``workers`` at a time, and reports progress; results come back through
the spec's result file and the pending segment the worker writes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def _check_cancel(stop: Callable[[], None]) -> None:
    if cancelled.is_set():
        cancelled.clear()
        stop()
        raise ReplayError("replay cancelled; values computed so far are kept")


class LocalExecutor:
    """Worker processes on this machine; Ctrl-C stops them all."""

    name = "local"

    def run(self, tasks: list[Task], workers: int, on_progress: ProgressFn) -> list[TaskResult]:
        cancelled.clear()  # a Ctrl-C from before this replay is not for it
        queue = list(tasks)
        running: dict[int, tuple[subprocess.Popen, Task]] = {}
        results: list[TaskResult] = []
        try:
            while queue or running:
                while queue and len(running) < max(1, workers):
                    task = queue.pop(0)
                    log = open(task.log_path, "wb")
                    proc = subprocess.Popen(
                        task.cmd, cwd=task.cwd, env=task.env, stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    log.close()
                    running[proc.pid] = (proc, task)
                time.sleep(0.1)
                _check_cancel(lambda: [_stop(p) for p, _ in running.values()])
                for pid, (proc, task) in list(running.items()):
                    on_progress(task, _progress(task))
                    if proc.poll() is not None:
                        del running[pid]
                        results.append(TaskResult(task, proc.returncode))
        except KeyboardInterrupt:
            for proc, _ in running.values():
                _stop(proc)
            raise
        return results


def _stop(proc: subprocess.Popen) -> None:
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
