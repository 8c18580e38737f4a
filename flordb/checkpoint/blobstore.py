"""Content-addressed, crash-safe storage of checkpoint blobs.

A blob lives at ``<root>/blobs/<first 2 hex>/<remaining 62 hex>`` of its
SHA-256. Writes go to a temp file in the same directory, are fsynced, then
renamed over the final name with ``os.replace`` and the directory is fsynced,
so after a crash a final name either holds the complete blob or does not exist.
Temp files start with ``.tmp-`` and are never taken for blobs (names must be
hex), and :meth:`BlobStore.sweep_temp` removes leftovers.

Example:
    >>> import tempfile
    >>> store = BlobStore(tempfile.mkdtemp())
    >>> digest = store.put(b"hello")
    >>> store.get(digest)
    b'hello'
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flordb.errors import CheckpointError

_DIGEST = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"


def digest_of(data: bytes | memoryview) -> str:
    """The hex SHA-256 under which ``data`` is stored."""
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Immutable blobs under ``<root>/blobs``, named by their SHA-256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / "blobs"

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        if not _DIGEST.fullmatch(digest):
            raise CheckpointError(
                f"not a blob digest: {digest!r} (expected 64 lowercase hex digits)"
            )
        return self.dir / digest[:2] / digest[2:]

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, str)
            and bool(_DIGEST.fullmatch(digest))
            and self.path(digest).is_file()
        )

    def put(self, data: bytes | memoryview) -> str:
        """Store ``data`` durably and return its digest; a no-op if already stored.

        Raises CheckpointError (the caller warns and carries on) when the disk
        is full, not writable, or any other OS error occurs.
        """
        digest = digest_of(data)
        final = self.path(digest)
        try:
            if final.stat().st_size == len(data):
                return digest
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._write_error(final, e) from e
        tmp_name = None
        try:
            new_dir = not final.parent.is_dir()
            final.parent.mkdir(parents=True, exist_ok=True)
            if new_dir:
                _fsync_dir(final.parent.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=final.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, final)
            tmp_name = None
            _fsync_dir(final.parent)
        except OSError as e:
            raise self._write_error(final, e) from e
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against its digest."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(
                f"checkpoint blob {digest} is missing from {self.dir}; "
                "was FLORDB_HOME moved or cleaned? Replay can start from an earlier checkpoint"
            ) from None
        except OSError as e:
            raise CheckpointError(
                f"could not read checkpoint blob {path}: {e.strerror or e}"
            ) from e
        if digest_of(data) != digest:
            raise CheckpointError(
                f"checkpoint blob {path} is corrupt (content does not match its SHA-256); "
                "delete it so the checkpoint is treated as missing"
            )
        return data

    def delete(self, digest: str) -> bool:
        """Remove a blob; False when it did not exist."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise CheckpointError(
                f"could not delete checkpoint blob {digest}: {e.strerror or e}"
            ) from e
        return True

    def __iter__(self) -> Iterator[str]:
        """Digests of stored blobs (temp files and strays are skipped)."""
        if not self.dir.is_dir():
            return
        for sub in sorted(self.dir.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for f in sorted(sub.iterdir()):
                digest = sub.name + f.name
                if _DIGEST.fullmatch(digest):
                    yield digest

    def sweep_temp(self, older_than: float = 3600.0) -> int:
        """Delete temp files left by crashed writers; returns how many.

        Only files older than ``older_than`` seconds go, so a concurrent
        writer's file in progress survives.
        """
        if not self.dir.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for tmp in self.dir.glob(f"*/{_TMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def _write_error(self, path: Path, e: OSError) -> CheckpointError:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "the disk is full; free space or point FLORDB_HOME elsewhere"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = (
                f"{self.root} is not writable; fix its permissions or point FLORDB_HOME elsewhere"
            )
        else:
            hint = "check FLORDB_HOME"
        return CheckpointError(f"could not write checkpoint blob {path}: {e.strerror or e}; {hint}")


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry change (rename, new file); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some filesystems (and Windows) cannot fsync directories.
        pass
    finally:
        os.close(fd)
