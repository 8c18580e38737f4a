"""Blob store: content addressing, atomic writes, corruption, write failures."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flordb.checkpoint.blobstore import BlobStore
from flordb.errors import CheckpointError


def test_put_get_layout_and_idempotence(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"checkpoint bytes" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = tmp_path / "blobs" / digest[:2] / digest[2:]
    assert store.path(digest) == path and path.read_bytes() == data
    assert store.get(digest) == data
    assert digest in store and "0" * 64 not in store and "nope" not in store
    mtime = path.stat().st_mtime_ns
    assert store.put(data) == digest  # no rewrite
    assert path.stat().st_mtime_ns == mtime
    assert list(store) == [digest]
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind
    assert store.put(b"") == hashlib.sha256(b"").hexdigest()


def test_leftover_temp_file_never_looks_like_a_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"half-written checkpoint"
    digest = hashlib.sha256(data).hexdigest()
    # A writer that dies between writing its temp file and the rename.
    code = (
        "import os, sys\n"
        "from flordb.checkpoint.blobstore import BlobStore\n"
        "os.replace = lambda *a: os._exit(3)\n"
        "BlobStore(sys.argv[1]).put(b'half-written checkpoint')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == 3
    leftovers = list((tmp_path / "blobs").glob("*/.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == data
    assert digest not in store and list(store) == []
    with pytest.raises(CheckpointError, match="missing"):
        store.get(digest)
    # A later writer succeeds; the sweep removes the leftover.
    assert store.put(data) == digest and store.get(digest) == data
    assert store.sweep_temp(older_than=3600) == 0  # too recent: may be a live writer
    assert store.sweep_temp(older_than=0) == 1
    assert list((tmp_path / "blobs").glob("*/.tmp-*")) == []


def test_failed_rename_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)

    def fail(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="could not write checkpoint blob"):
        store.put(b"data")
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "err,message",
    [(errno.ENOSPC, "disk is full"), (errno.EACCES, "not writable"), (errno.EROFS, "not writable")],
)
def test_write_failures_are_checkpoint_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, message: str
) -> None:
    store = BlobStore(tmp_path)

    def fail(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(CheckpointError, match=message):
        store.put(b"data")
    monkeypatch.undo()
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_unwritable_root(tmp_path: Path) -> None:
    root = tmp_path / "file-not-dir"
    root.write_text("x")
    with pytest.raises(CheckpointError, match="could not write"):
        BlobStore(root).put(b"data")


def test_corruption_is_detected_and_repaired_by_put(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * 4
    digest = store.put(data)
    path = store.path(digest)
    os.chmod(path, 0o644)
    flipped = bytearray(data)
    flipped[10] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        store.get(digest)
    path.write_bytes(data[:-5])  # truncated: a put of the same data rewrites it
    store.put(data)
    assert store.get(digest) == data


def test_bad_digests_and_delete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for bad in ["", "../etc/passwd", "A" * 64, "a" * 63]:
        with pytest.raises(CheckpointError, match="not a blob digest"):
            store.get(bad)
    digest = store.put(b"x")
    assert store.delete(digest) and not store.delete(digest)
    assert digest not in store
