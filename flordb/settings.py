"""Settings: environment variables, overridable in a script with ``flor.config``.

Every setting has one name, an environment variable ``FLORDB_<NAME>`` and a
parser that turns bad text into a ``ConfigError`` naming the fix.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

_overrides: dict[str, Any] = {}


def _fraction(text: str) -> float:
    if "/" in text:
        num, _, den = text.partition("/")
        value = float(num) / float(den)
    else:
        value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1")
    return value


def _codec(text: str) -> str:
    if text not in ("lossless", "lc", "none"):
        raise ValueError("must be one of lossless, lc, none")
    return text


def _bits(text: str) -> int:
    value = int(text)
    if value not in (2, 3):
        raise ValueError("must be 2 or 3")
    return value


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _flag(text: str) -> bool:
    return text.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class _Setting:
    parse: Callable[[str], Any]
    default: Callable[[], Any]


SETTINGS: dict[str, _Setting] = {
    "home": _Setting(lambda t: Path(t).expanduser(), lambda: Path("~/.flordb").expanduser()),
    "epsilon": _Setting(_fraction, lambda: 1 / 15),
    "codec": _Setting(_codec, lambda: "lossless"),
    "lc_bits": _Setting(_bits, lambda: 3),
    "workers": _Setting(_workers, lambda: max(1, (os.cpu_count() or 2))),
    "debug": _Setting(_flag, lambda: False),
    "keyframe_every": _Setting(_workers, lambda: 8),
}


def get(name: str) -> Any:
    """The value of setting ``name``: ``flor.config`` first, then the environment, then the default."""
    if name in _overrides:
        return _overrides[name]
    setting = SETTINGS[name]
    text = os.environ.get(f"FLORDB_{name.upper()}")
    if text is None or text == "":
        return setting.default()
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError(
            f"FLORDB_{name.upper()}={text!r} is invalid: {exc}; fix or unset the variable"
        ) from None


def is_set(name: str) -> bool:
    """Whether ``name`` was given (``flor.config`` or ``FLORDB_<NAME>``), not defaulted."""
    return name in _overrides or bool(os.environ.get(f"FLORDB_{name.upper()}"))


def config(**settings: Any) -> None:
    """Override settings for this process, e.g. ``flor.config(epsilon=0.05, codec="lc")``.

    Call it before the first ``flor.loop``; names are those of the ``FLORDB_*``
    variables in lower case.
    """
    for name, value in settings.items():
        key = name.lower().removeprefix("flordb_")
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(f"unknown setting {name!r}; known settings: {known}")
        try:
            _overrides[key] = SETTINGS[key].parse(str(value))
        except ValueError as exc:
            raise ConfigError(f"flor.config({name}={value!r}) is invalid: {exc}") from None


def home() -> Path:
    """``FLORDB_HOME``, created when missing."""
    path = Path(get("home"))
    path.mkdir(parents=True, exist_ok=True)
    return path
