"""Every error flordb raises, one class per stage of the data's path.

Messages name the bad value and the next step. The CLI turns any ``FlorError``
into one line, ``flordb: error: <message>``, and exit status 1.
"""
from __future__ import annotations


class FlorError(Exception):
    """Root of all flordb errors."""


class ConfigError(FlorError):
    """A bad setting: an environment variable, ``flor.config`` or ``--kwargs``."""


class RecordError(FlorError):
    """Misuse of the record API (``flor.arg``, ``flor.log``, ``flor.loop``)."""


class VersionError(FlorError):
    """The code version could not be recorded (no git repository, git failure)."""


class StoreError(FlorError):
    """The database could not be opened, locked or written."""


class QueryError(FlorError):
    """A query could not be parsed, planned or executed."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        if line is not None:
            message = f"{message} (line {line}, column {col})"
        super().__init__(message)
        self.line = line
        self.col = col


class CheckpointError(FlorError):
    """A checkpoint could not be taken, written or restored."""


class ReplayError(FlorError):
    """A hindsight replay could not be planned or run."""


class PropagateError(FlorError):
    """A log statement could not be propagated into an older version."""
