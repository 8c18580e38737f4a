"""The replay side of a run: what ``flor.*`` do inside a replay worker process.

A worker is a fresh Python process running "a script text for this run" (the
run's recorded version plus the requested ``flor.log`` statements) with
``FLORDB_REPLAY_SPEC`` pointing at a JSON spec written by the coordinator
(``hindsight.replay``). Here:

* ``flor.arg`` returns the value the run recorded;
* ``flor.log`` keeps the requested names (stored later with source
  ``replay``/``backfill``) and compares every other recorded name with what
  was recorded (the fidelity check);
* the checkpointed ``flor.loop`` follows the plan: it skips iterations nobody
  needs, restores the checkpoint before each iteration it runs, and in
  ``outer`` mode restores the iteration's end state and skips the inner loop,
  handing back the locals that loop would have left.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import settings
from ..record import run as record
from ..record.writer import BackgroundWriter, resolve
from ..store.segments import SegmentWriter, pending_dir

_CO_NEWLOCALS = 0x0002


def ctx_key(path: str, idx: tuple[int, ...]) -> str:
    return f"{path}|{','.join(map(str, idx))}"


def set_frame_locals(frame: Any, values: dict[str, Any]) -> None:
    """Assign ``values`` to variables of a running frame (module or function)."""
    if not values:
        return
    frame.f_locals.update(values)
    if frame.f_code.co_flags & _CO_NEWLOCALS:
        # CPython 3.11/3.12: copy the f_locals dict back into the fast locals.
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


class _Sink:
    """Stands in for the record buffer: filters and checks what ``flor.log`` sends."""

    def __init__(self, run: ReplayRun):
        self.run = run
        self.keep = set(run.spec["names"])
        self.out = run.writer.buffer
        self.recorded: dict[str, dict[str, Any]] = run.spec.get("recorded", {})

    def append(self, item: tuple[str, Any, tuple[str, tuple[int, ...]]]) -> None:
        name, value, ctx = item
        if name in self.keep:
            self.out.append(item)
            return
        expected = self.recorded.get(name)
        if expected is None:
            return
        key = ctx_key(*ctx)
        if key not in expected:
            return
        got = resolve(value)
        want = expected[key]
        if not _same(got, want):
            self.run.mismatches.append(
                {"name": name, "context": key, "recorded": want, "replayed": got,
                 "iteration": ctx[1][self.run.depth] if len(ctx[1]) > self.run.depth else None}
            )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return float(a) == float(b)
    if isinstance(a, (list, dict)) and isinstance(b, str):
        return json.dumps(a) == b
    return a == b


class ReplayRun(record.Run):
    """A replay worker's run: same API, plan-driven behaviour."""

    def __init__(self, spec_path: Path):
        import concurrent.futures.thread  # noqa: F401  (see Run.__init__)

        self.spec = json.loads(Path(spec_path).read_text())
        spec = self.spec
        self.home = settings.home()
        self.script = None
        self.run_id = spec["run_id"]
        self.projid = spec["projid"]
        self.vid = spec["vid"]
        self.filename = spec["filename"]
        self.source = spec.get("source", "replay")
        self.pid = os.getpid()
        self.tstamp = time.time()
        self.status = "finished"
        self.error = None
        self.mode = "replay"
        self.args = dict(spec.get("args", {}))
        self.ctx = ("", ())
        self.checkpoints = None
        self.ended = False
        self.depth = int(spec.get("depth", 0))
        self.plan = {int(k): v for k, v in spec.get("plan", {}).items()}
        self.stop_after = spec.get("stop_after")
        self.post = bool(spec.get("post", False))
        self.mismatches: list[dict[str, Any]] = []
        self.executed = 0
        self.restored = 0
        self.skip_inner = False
        self.pending_locals: dict[str, Any] = {}
        self._outer_started = False
        self.segment_id = spec["segment_id"]
        segment = SegmentWriter(pending_dir(self.home) / f"{self.segment_id}.seg")
        self.writer = BackgroundWriter(segment)
        segment.append(self.header())
        segment.sync()
        self.writer.start()
        self.buffer = _Sink(self)

    def header(self) -> dict[str, Any]:
        return {
            "t": "run", "source": self.source, "run_id": self.run_id, "projid": self.projid,
            "tstamp": self.tstamp, "vid": self.vid, "filename": self.filename,
        }

    # ------------------------------------------------------------- record API
    def arg(self, name: str, default: Any) -> Any:
        if name in self.args:
            value = self.args[name]
            if isinstance(default, tuple) and isinstance(value, list):
                return tuple(value)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            return value
        self.args[name] = default  # a newer arg than this run: its default
        return default

    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        parent_path, parent_idx = self.ctx
        depth = len(parent_idx)
        if depth == self.depth and not self._outer_started and name == self.spec.get("loop"):
            self._outer_started = True
            return self._outer(name, iterable, parent_path, parent_idx)
        if self.skip_inner and depth == self.depth + 1:
            return self._skipped_inner()
        return self._iterate(name, iterable, parent_path, parent_idx)

    def _checkpoint_manager_for(self, depth: int, name: str) -> Any:
        return None  # a replay takes no checkpoints

    # ------------------------------------------------------------- the plan
    def _restore(self, iteration: int, frame: Any) -> None:
        from ..checkpoint.manager import LOCALS_NAME, UNCAPTURABLE, restore

        manifest = self.spec["manifest"]
        values, _ = restore(self.home, manifest, iteration, record.registered_objects())
        captured = dict(values.get(LOCALS_NAME) or {})
        captured.pop(UNCAPTURABLE, None)
        self.pending_locals = captured
        set_frame_locals(frame, captured)

    def _outer(
        self, name: str, iterable: Iterable[Any], parent_path: str, parent_idx: tuple[int, ...]
    ) -> Iterator[Any]:
        path = f"{parent_path}/{name}" if parent_path else name
        # The iteration whose end state the objects hold (-1: initial, None: unknown).
        state_at: int | None = -1
        last_i = -1
        saved = self.ctx
        try:
            for i, item in enumerate(iterable):
                last_i = i
                if self.stop_after is not None and i > self.stop_after:
                    if not self.post:
                        self._finish_early()
                    continue
                mode = self.plan.get(i)
                if mode is None:
                    continue
                frame = sys._getframe(1)
                if mode == "outer":
                    self._restore(i, frame)
                    self.skip_inner = True
                    self.ctx = (path, parent_idx + (i,))
                    try:
                        yield item
                    finally:
                        self.skip_inner = False
                    # The body ran on top of the end-of-i state (it may step a
                    # scheduler, draw random numbers): the objects no longer hold
                    # that state, so the next executed iteration restores it.
                    state_at = None
                    self.restored += 1
                else:
                    if state_at != i - 1:
                        self._restore(i - 1, frame)
                    self.ctx = (path, parent_idx + (i,))
                    yield item
                    state_at = i
                    self.executed += 1
                self._progress()
            final = self.spec.get("final_checkpoint")
            if self.post and final is not None and state_at != final and last_i >= 0:
                self._restore(final, sys._getframe(1))
        finally:
            self.ctx = saved

    def _skipped_inner(self) -> Iterator[Any]:
        """The inner loop of an ``outer``-mode iteration: no items, its locals restored."""
        set_frame_locals(sys._getframe(1), self.pending_locals)
        return
        yield  # unreachable: makes this function a generator

    def _progress(self) -> None:
        path = self.spec.get("progress_path")
        if path:
            tmp = f"{path}.tmp"
            Path(tmp).write_text(json.dumps({"done": self.executed + self.restored}))
            os.replace(tmp, path)

    def _finish_early(self) -> None:
        """Past this worker's segment and nothing after the loop is needed: stop here."""
        self.commit()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    # ------------------------------------------------------------- lifecycle
    def commit(self) -> None:
        if self.ended or os.getpid() != self.pid:
            return
        self.ended = True
        self.writer.close({"t": "end", "status": self.status, "end_time": time.time(),
                           "error": self.error})
        result = {
            "run_id": self.run_id, "segment_id": self.segment_id, "status": self.status,
            "error": self.error, "executed": self.executed, "restored": self.restored,
            "mismatches": self.mismatches[:100], "mismatch_count": len(self.mismatches),
        }
        path = self.spec.get("result_path")
        if path:
            Path(path).write_text(json.dumps(result, default=str))
