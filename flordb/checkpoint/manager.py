"""Checkpoints of a run: adaptive, taken in the foreground, written in the background.

At the end of an iteration of the checkpointed outer ``flor.loop`` the policy
decides; the training thread then pays only for ``take_snapshot`` (a host
copy) and a bounded queue put (backpressure when ``MAX_IN_FLIGHT`` snapshots
are waiting). A writer thread encodes each object's chain, stores the blob
(fsynced and renamed) and only then appends its manifest row to the run's
segment, so a manifest never points at a torn file. A failed write (disk full,
permission) warns once, marks that row failed, and restarts the chain with a
keyframe; training continues.

A thread, not a forked process: zstd and NumPy release the GIL for the heavy
work, and a thread shares the snapshot's memory without a copy. Its CPU time
(several times the foreground copy) still slows training when no core is idle,
so each checkpoint's background CPU seconds are charged to the policy too,
weighted by ``policy.contention()``.
"""

from __future__ import annotations

import json
import queue
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import settings
from ..errors import CheckpointError
from .blobstore import BlobStore
from .codecs import ChainEncoder, decode_chain, object_codec
from .policy import AdaptivePolicy, contention
from .snapshot import (
    RNG_NAME,
    Snapshot,
    dumps_skeleton,
    loads_skeleton,
    merge_parts,
    restore_snapshot,
    take_snapshot,
)

MAX_IN_FLIGHT = 2
LOCALS_NAME = "__locals__"
UNCAPTURABLE = "__uncapturable__"
_NOT_PLAIN = object()
_MAGIC = b"FLCK1"
_LEN = struct.Struct("<I")


def pack(skeleton: dict[str, Any], data: bytes) -> bytes:
    """One stored blob: the object's skeleton (JSON) and its encoded tensors."""
    head = dumps_skeleton(skeleton).encode()
    return _MAGIC + _LEN.pack(len(head)) + head + data


def unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not blob.startswith(_MAGIC):
        raise CheckpointError("not a flordb checkpoint blob (bad magic)")
    (n,) = _LEN.unpack_from(blob, len(_MAGIC))
    start = len(_MAGIC) + _LEN.size
    return loads_skeleton(blob[start : start + n]), blob[start + n :]


class CheckpointManager:
    """Checkpoints the registered objects at the ends of one loop's iterations."""

    def __init__(self, run: Any, objects: dict[str, Any], loop_name: str, depth: int):
        self.run = run
        self.objects = dict(objects)
        self.loop_name = loop_name
        self.depth = depth
        self.policy = AdaptivePolicy(settings.get("epsilon"))
        self.codec = settings.get("codec")
        self.lc_bits = settings.get("lc_bits")
        # lc keyframes are full lossless copies that dominate a chain's size, so
        # lc chains keyframe less often unless FLORDB_KEYFRAME_EVERY says otherwise.
        self.keyframe_every = settings.get("keyframe_every")
        if self.codec == "lc" and not settings.is_set("keyframe_every"):
            self.keyframe_every = 32
        self.blobs = BlobStore(run.home)
        self.encoders: dict[str, ChainEncoder] = {}
        self.chain_base: dict[str, int] = {}
        self.taken = 0
        self.failed = 0
        self.locals: dict[str, Any] = {}  # captured by the replay analysis (skip blocks)
        self._warned = False
        self._started = time.perf_counter()
        self._background: list[float] = []  # CPU seconds per materialised checkpoint
        self._background_total = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_IN_FLIGHT)
        self._thread = threading.Thread(target=self._work, name="flordb-checkpoints", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------- foreground
    def end_iteration(self, i: int, seconds: float, is_last: bool) -> bool:
        self._charge_background()
        if not self.policy.should_checkpoint(i, seconds, is_last):
            return False
        self._take(i)
        return True

    def force(self, i: int) -> None:
        self._take(i)

    def _charge_background(self) -> None:
        """Charge the policy for the background CPU time spent since the last call."""
        if not self._background:
            return
        # list.pop(0) is atomic under the GIL; the writer thread only appends.
        charges = [self._background.pop(0) for _ in range(len(self._background))]
        busy = self._background_total / max(time.perf_counter() - self._started, 1e-9)
        weight = contention(busy)
        for cpu in charges:
            self.policy.record_background(cpu * weight)

    def _take(self, i: int) -> None:
        start = time.perf_counter()
        objects = dict(self.objects)
        if self.locals:
            objects[LOCALS_NAME] = dict(self.locals)
        try:
            snap = take_snapshot(objects)
        except CheckpointError as exc:  # an object flordb cannot capture: warn, train on
            self.policy.record_cost(time.perf_counter() - start)
            self._warn(f"cannot checkpoint iteration {i}: {exc}")
            self.failed += 1
            self.run.writer.frame({"t": "ckpt", "items": [self._failed_row(i, "*", str(exc))]})
            return
        self._queue.put((i, snap))
        self.policy.record_cost(time.perf_counter() - start)
        self.taken += 1

    # ------------------------------------------------- skip-block locals
    def bind_outer_frame(self, frame: Any) -> None:
        """Remember the frame running the checkpointed loop (for the locals analysis)."""
        self._outer_code = frame.f_code
        self._outer_line = frame.f_lineno

    def capture_locals(self, frame: Any) -> None:
        """At an inner loop's end: copy the locals replay needs if it skips that loop.

        Names come from static analysis (``hindsight.statements``); values that
        are registered objects are restored anyway; values that cannot be
        captured are listed, so replay falls back to running the iteration.
        """
        if getattr(self, "_outer_code", None) is not frame.f_code:
            self.locals = {UNCAPTURABLE: ["<inner loop in another function>"]}
            return
        names = self._candidates()
        if names is None:
            self.locals = {UNCAPTURABLE: ["<source unavailable>"]}
            return
        registered = {id(o) for o in self.objects.values()}
        captured: dict[str, Any] = {}
        missing: list[str] = []
        f_locals = frame.f_locals
        for name in sorted(names):
            if name not in f_locals:
                continue
            value = f_locals[name]
            if id(value) in registered:
                continue
            copied = _copy_plain(value)
            if copied is _NOT_PLAIN:
                missing.append(name)
            else:
                captured[name] = copied
        captured[UNCAPTURABLE] = missing
        self.locals = captured

    def _candidates(self) -> set[str] | None:
        """The names to capture, analysed once per run (parsing the script at every
        inner loop's end cost ~1.5 ms per outer iteration); None without source."""
        if not hasattr(self, "_candidate_names"):
            from ..hindsight.statements import capture_candidates

            try:
                source = Path(self._outer_code.co_filename).read_text()
                if getattr(self.run, "mode", "record") == "handsfree":
                    from ..handsfree.instrument import flor_source

                    source = flor_source(source)
            except OSError:
                self._candidate_names: set[str] | None = None
            else:
                self._candidate_names = set(capture_candidates(source, self._outer_line))
        return self._candidate_names

    def close(self) -> float:
        """Wait for pending writes; the achieved overhead."""
        self._queue.put(None)
        self._thread.join()
        self._charge_background()
        return self.policy.achieved_overhead

    # ---------------------------------------------------------- background
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            i, snap = item
            cpu = time.thread_time()
            try:
                rows = self._materialise(i, snap)
            except Exception as exc:  # never kill training over a checkpoint
                rows = [self._failed_row(i, "*", str(exc))]
                for enc in self.encoders.values():
                    enc.force_keyframe()
            self.run.writer.frame({"t": "ckpt", "items": rows})
            cpu = time.thread_time() - cpu
            self._background_total += cpu
            self._background.append(cpu)

    def _materialise(self, i: int, snap: Snapshot) -> list[dict[str, Any]]:
        snap.wait()
        rows = []
        for name, (tensors, skeleton) in snap.split().items():
            obj = self.objects.get(name)
            codec = (
                object_codec(self.codec, obj) if name not in (RNG_NAME, LOCALS_NAME) else "lossless"
            )
            enc = self.encoders.get(name)
            if enc is None:
                enc = self.encoders[name] = ChainEncoder(
                    codec, keyframe_every=self.keyframe_every, lc_bits=self.lc_bits
                )
            blob = enc.encode(tensors)
            if blob.kind == "key":
                self.chain_base[name] = i
            try:
                digest = self.blobs.put(pack(skeleton, blob.data))
            except CheckpointError as exc:
                enc.force_keyframe()
                self.failed += 1
                self._warn(
                    f"checkpoint write failed ({exc}); training continues, "
                    "`flordb checkpoints` lists the missing iterations"
                )
                rows.append(self._failed_row(i, name, str(exc), codec))
                continue
            rows.append(
                {
                    "iteration": i,
                    "object": name,
                    "codec": codec,
                    "kind": blob.kind,
                    "base_iteration": self.chain_base[name],
                    "digest": digest,
                    "raw_bytes": blob.raw_bytes,
                    "stored_bytes": blob.stored_bytes,
                    "approximate": blob.approximate,
                    "status": "ok",
                }
            )
        return rows

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per run: a full disk stays full
            self._warned = True
            print(f"flordb: warning: {message}", file=sys.stderr)

    @staticmethod
    def _failed_row(i: int, name: str, error: str, codec: str = "") -> dict[str, Any]:
        return {
            "iteration": i,
            "object": name,
            "codec": codec or "?",
            "status": "failed",
            "error": error[:500],
        }


def _copy_plain(value: Any, depth: int = 0) -> Any:
    """A copy of a plain value (numbers, strings, arrays, tensors and containers
    of them); ``_NOT_PLAIN`` for anything else (modules, iterators, objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > 4:
        return _NOT_PLAIN
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.generic):
        return value.item()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        items = [_copy_plain(v, depth + 1) for v in value]
        if any(v is _NOT_PLAIN for v in items):
            return _NOT_PLAIN
        return type(value)(items) if isinstance(value, tuple) and type(value) is tuple else items
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        items2 = {k: _copy_plain(v, depth + 1) for k, v in value.items()}
        if any(v is _NOT_PLAIN for v in items2.values()):
            return _NOT_PLAIN
        return items2
    return _NOT_PLAIN


# ------------------------------------------------------------------ restore
def load_state(
    home: Path, manifest: list[dict[str, Any]], iteration: int
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """Decode the state at the end of ``iteration`` from manifest rows of one run.

    Returns (tensors, skeleton, approximate). Each object's chain is read from
    its keyframe (``base_iteration``) up to ``iteration``.
    """
    blobs = BlobStore(home)
    at = [r for r in manifest if r["iteration"] == iteration and r["status"] == "ok"]
    if not at:
        raise CheckpointError(f"no checkpoint at iteration {iteration}")
    parts = [_decode_object(blobs, manifest, row) for row in at]
    approximate = any(bool(row.get("approximate")) for row in at)
    tensors, skeleton = merge_parts(parts)
    return tensors, skeleton, approximate


def _decode_object(
    blobs: BlobStore, manifest: list[dict[str, Any]], row: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, skeleton) of one object at ``row``'s iteration, read from its keyframe on."""
    chain = sorted(
        (
            r
            for r in manifest
            if r["object"] == row["object"]
            and r["status"] == "ok"
            and row["base_iteration"] <= r["iteration"] <= row["iteration"]
        ),
        key=lambda r: r["iteration"],
    )
    skeleton: dict[str, Any] = {}
    datas = []
    for r in chain:
        skeleton, data = unpack(blobs.get(r["digest"]))
        datas.append(data)
    return decode_chain(datas), skeleton


def uncaptured_locals(home: Path, manifest: list[dict[str, Any]]) -> list[str]:
    """Locals a skipped inner loop would leave that recording could not capture.

    Read from the run's first stored locals checkpoint; the names are the same
    at every iteration. Unreadable checkpoints count as uncapturable.
    """
    rows = [r for r in manifest if r["object"] == LOCALS_NAME and r["status"] == "ok"]
    if not rows:
        return []  # no inner loop in the checkpointed one captured anything
    first = min(rows, key=lambda r: r["iteration"])
    try:
        tensors, skeleton = _decode_object(BlobStore(home), manifest, first)
        values = restore_snapshot({}, tensors, skeleton, rng=False, strict=False)
    except CheckpointError as exc:
        return [f"<unreadable locals checkpoint: {exc}>"]
    return list((values.get(LOCALS_NAME) or {}).get(UNCAPTURABLE) or [])


def restore(
    home: Path, manifest: list[dict[str, Any]], iteration: int, objects: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Load run state at the end of ``iteration`` into ``objects`` (and the RNGs).

    Returns the plain values (including captured locals) and whether the state
    is approximate (lossy codec).
    """
    tensors, skeleton, approximate = load_state(home, manifest, iteration)
    values = restore_snapshot(objects, tensors, skeleton, strict=False)
    return values, approximate


def complete_iterations(manifest: list[dict[str, Any]]) -> list[int]:
    """Iterations at which every checkpointed object has a stored blob."""
    by_iter: dict[int, list[dict[str, Any]]] = {}
    for r in manifest:
        by_iter.setdefault(r["iteration"], []).append(r)
    return sorted(
        i for i, rows in by_iter.items() if rows and all(r["status"] == "ok" for r in rows)
    )


def manifest_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows)
