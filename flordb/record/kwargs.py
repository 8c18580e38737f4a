"""``--kwargs name=value ...`` on a training script's command line.

The tokens are taken out of ``sys.argv`` as soon as flordb is imported, so the
script's own argparse never sees them; ``flor.arg`` reads them later and casts
each to the type of its default.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import RecordError

_given: dict[str, str] = {}
_used: set[str] = set()


def strip_argv(argv: list[str] | None = None) -> dict[str, str]:
    """Remove ``--kwargs a=1 b=x`` from argv (in place) and remember the pairs.

    Without ``argv`` this reads the process's own command line at import, before
    any excepthook of flordb's exists; a malformed ``--kwargs`` there is a usage
    error, reported like argparse reports one: a line on stderr and exit.
    """
    if argv is not None:
        return _strip(argv)
    try:
        return _strip(sys.argv)
    except RecordError as exc:
        from .. import settings

        if settings.get("debug"):
            raise
        print(f"flordb: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _strip(argv: list[str]) -> dict[str, str]:
    while "--kwargs" in argv:
        at = argv.index("--kwargs")
        end = at + 1
        while end < len(argv) and "=" in argv[end] and not argv[end].startswith("-"):
            name, _, value = argv[end].partition("=")
            if not name.isidentifier():
                raise RecordError(
                    f"--kwargs {argv[end]!r}: {name!r} is not a valid name; write name=value"
                )
            _given[name] = value
            end += 1
        if end == at + 1:
            raise RecordError("--kwargs takes name=value pairs, e.g. --kwargs lr=0.01 epochs=5")
        del argv[at:end]
    return dict(_given)


def given(name: str) -> str | None:
    """The text given on the command line for ``name``, if any."""
    if name in _given:
        _used.add(name)
        return _given[name]
    return None


def unused() -> list[str]:
    return sorted(set(_given) - _used)


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def cast(name: str, text: str, default: Any) -> Any:
    """Cast ``text`` to the type of ``default``; a clear error when it cannot be."""
    kind = type(default)
    try:
        if default is None or kind is str:
            return text
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true/false")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind in (list, dict, tuple):
            value = json.loads(text)
            if kind is tuple and isinstance(value, list):
                return tuple(value)
            if not isinstance(value, kind):
                raise ValueError(f"expected a JSON {kind.__name__}")
            return value
    except ValueError as exc:
        raise RecordError(
            f"--kwargs {name}={text!r} cannot be cast to {kind.__name__} "
            f"(the type of flor.arg({name!r}, {default!r})): {exc}"
        ) from None
    raise RecordError(
        f"flor.arg({name!r}, ...) has a default of type {kind.__name__}, which --kwargs cannot "
        "cast; use a default of type int, float, bool, str, list, dict or tuple"
    )
