"""Capture registered objects' state on the training thread, and restore it.

:func:`take_snapshot` is the foreground part of a checkpoint, so it only copies:
every tensor of every registered object goes into ``Snapshot.tensors`` (a flat
``dict[str, np.ndarray]``, keys like ``model/layer.weight`` or
``optimizer/state/0/exp_avg``) and everything else into ``Snapshot.skeleton``,
a JSON-able structure with placeholders where the tensors were. CUDA tensors
are copied into pinned host memory with ``non_blocking=True`` and a CUDA event
is recorded, so the training thread never synchronises; whoever reads the
tensors (the background materialiser) calls :meth:`Snapshot.wait` first.

The skeleton uses a tagged JSON encoding so that tuples, int dict keys, bytes,
non-finite floats, dtypes and the like round-trip exactly without pickle:
a dict with the key ``"__t"`` is a tagged value, e.g. ``{"__t": "tuple", "v":
[1, 2]}``; any other dict is a plain str-keyed dict.

Example:
    >>> import numpy as np
    >>> arr = np.zeros(3)
    >>> snap = take_snapshot({"arr": arr, "best": (1, 0.5)}, rng=False)
    >>> arr += 1
    >>> restore_snapshot({"arr": arr}, snap.tensors, snap.skeleton)
    {'best': (1, 0.5)}
    >>> arr.tolist()
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

import base64
import json
import math
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.random  # lazy in numpy: importing it inside the first snapshot cost ~10 ms

from flordb.errors import CheckpointError

SKELETON_VERSION = 1

#: Pseudo-object name under which the global RNG states travel in
#: :meth:`Snapshot.split`; no registered object may have this name.
RNG_NAME = "__rng__"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# numpy dtype of the same width for torch dtypes numpy lacks (bf16, fp8, ...):
# their bits travel as unsigned ints and the torch dtype is recorded.
_UINT_OF_SIZE = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}
_SIGNED_TORCH_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
_NUMPY_TORCH_DTYPES = frozenset(
    ["bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"]
    + ["float16", "float32", "float64", "complex64", "complex128"]
)


@dataclass
class Snapshot:
    """The state of registered objects at one instant.

    ``tensors`` may still be filling from the GPU; call :meth:`wait` before
    reading them on another thread.
    """

    tensors: dict[str, np.ndarray]
    skeleton: dict[str, Any]
    seconds: float = 0.0
    owners: dict[str, list[str]] = field(default_factory=dict)
    _events: list[Any] = field(default_factory=list, repr=False)
    _keepalive: list[Any] = field(default_factory=list, repr=False)

    def wait(self) -> None:
        """Block until pending device-to-host copies have landed."""
        events, self._events = self._events, []
        for event in events:
            event.synchronize()
        self._keepalive.clear()

    @property
    def nbytes(self) -> int:
        """Total bytes of the captured tensors."""
        return sum(a.nbytes for a in self.tensors.values())

    def split(self) -> dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """Per object (and ``RNG_NAME`` for the RNG states): its tensors and skeleton.

        Each part is a valid (tensors, skeleton) pair for
        :func:`restore_snapshot`; :func:`merge_parts` joins parts back.
        """
        parts: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
        for name, entry in self.skeleton["objects"].items():
            keys = self.owners.get(name, [])
            parts[name] = (
                {k: self.tensors[k] for k in keys},
                {"version": SKELETON_VERSION, "objects": {name: entry}, "rng": None},
            )
        if self.skeleton.get("rng"):
            keys = self.owners.get(RNG_NAME, [])
            parts[RNG_NAME] = (
                {k: self.tensors[k] for k in keys},
                {"version": SKELETON_VERSION, "objects": {}, "rng": self.skeleton["rng"]},
            )
        return parts


def take_snapshot(objects: dict[str, Any], rng: bool = True) -> Snapshot:
    """Copy the state of ``objects`` (and, with ``rng``, the global RNG states).

    Torch modules, optimizers, schedulers, GradScaler and anything with
    ``state_dict``/``load_state_dict`` are captured through ``state_dict()``;
    numpy arrays and torch tensors by value (restored in place);
    ``random.Random``, numpy and torch generators by their state; any other
    value must be JSON-like (numbers, strings, lists, tuples, dicts, arrays).

    Example:
        >>> import numpy as np
        >>> snap = take_snapshot({"w": np.ones(2, dtype=np.float32)}, rng=False)
        >>> list(snap.tensors), snap.skeleton["objects"]["w"]["kind"]
        (['w'], 'ndarray')
    """
    start = time.perf_counter()
    ctx = _Capture(sys.modules.get("torch"))
    entries: dict[str, Any] = {}
    for name, obj in objects.items():
        if not isinstance(name, str) or not name or name == RNG_NAME:
            raise CheckpointError(
                f"checkpointed object name {name!r} is not allowed; use a non-empty name other than {RNG_NAME!r}"
            )
        ctx.owner = name
        entries[name] = ctx.capture_object(name, obj)
    rng_entry = None
    if rng:
        ctx.owner = RNG_NAME
        rng_entry = ctx.capture_rng()
    events = ctx.record_events()
    skeleton = {"version": SKELETON_VERSION, "objects": entries, "rng": rng_entry}
    return Snapshot(
        tensors=ctx.tensors,
        skeleton=skeleton,
        seconds=time.perf_counter() - start,
        owners=ctx.owners,
        _events=events,
        _keepalive=ctx.keepalive,
    )


def restore_snapshot(
    objects: dict[str, Any],
    tensors: dict[str, np.ndarray],
    skeleton: dict[str, Any],
    *,
    rng: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a snapshot back into live ``objects``; return the plain values by name.

    Stateful objects get ``load_state_dict``; arrays and tensors are written in
    place; plain values cannot be restored in place, so they are returned (also
    when no live object of that name is given). With ``strict``, a stateful
    object in the skeleton but missing from ``objects`` is an error.
    RNG states are restored when ``rng`` and the skeleton has them.
    """
    if skeleton.get("version") != SKELETON_VERSION:
        raise CheckpointError(
            f"checkpoint skeleton version {skeleton.get('version')!r} is not supported (expected {SKELETON_VERSION})"
        )
    dec = _Decoder(tensors, sys.modules.get("torch"))
    values: dict[str, Any] = {}
    for name, entry in skeleton["objects"].items():
        kind = entry["kind"]
        if kind == "value":
            values[name] = dec.decode(entry["value"])
            continue
        if name not in objects:
            if strict:
                raise CheckpointError(
                    f"the checkpoint holds object {name!r} but it is not registered; "
                    f"pass it to flor.checkpointing({name}=...)"
                )
            continue
        try:
            _restore_object(name, objects[name], entry, dec)
        except CheckpointError:
            raise
        except Exception as e:  # load_state_dict raises many types
            raise CheckpointError(f"could not restore {name!r}: {type(e).__name__}: {e}") from e
    if rng and skeleton.get("rng"):
        _restore_rng(skeleton["rng"], dec)
    return values


def merge_parts(
    parts: Iterable[tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Join per-object (tensors, skeleton) parts (see :meth:`Snapshot.split`)."""
    tensors: dict[str, np.ndarray] = {}
    skeleton: dict[str, Any] = {"version": SKELETON_VERSION, "objects": {}, "rng": None}
    for part_tensors, part_skeleton in parts:
        if part_skeleton.get("version") != SKELETON_VERSION:
            raise CheckpointError(
                f"checkpoint skeleton version {part_skeleton.get('version')!r} is not supported"
            )
        tensors.update(part_tensors)
        skeleton["objects"].update(part_skeleton["objects"])
        if part_skeleton.get("rng"):
            skeleton["rng"] = part_skeleton["rng"]
    return tensors, skeleton


def dumps_skeleton(skeleton: dict[str, Any]) -> str:
    """Serialise a skeleton to JSON text (strict JSON: no NaN literals)."""
    return json.dumps(skeleton, separators=(",", ":"), allow_nan=False)


def loads_skeleton(text: str | bytes) -> dict[str, Any]:
    """Parse :func:`dumps_skeleton` output; executes no code."""
    try:
        skeleton = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"corrupt checkpoint skeleton: {e}") from e
    if not isinstance(skeleton, dict) or "objects" not in skeleton:
        raise CheckpointError("corrupt checkpoint skeleton: no 'objects'")
    return skeleton


def encode_value(value: Any) -> Any:
    """Tagged-JSON form of a plain value (no arrays or tensors).

    Example:
        >>> encode_value({1: (2, b"x")})
        {'__t': 'dict', 'v': [[1, {'__t': 'tuple', 'v': [2, {'__t': 'bytes', 'v': 'eA=='}]}]]}
        >>> decode_value(encode_value({1: (2, b"x")}))
        {1: (2, b'x')}
    """
    ctx = _Capture(sys.modules.get("torch"))
    encoded = ctx.encode(value, "value")
    if ctx.tensors:
        raise CheckpointError("encode_value does not take arrays or tensors; use take_snapshot")
    return encoded


def decode_value(encoded: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    return _Decoder({}, sys.modules.get("torch")).decode(encoded)


# -- capture -------------------------------------------------------------------


class _Capture:
    """Walks objects, copying tensors out and building the skeleton."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.tensors: dict[str, np.ndarray] = {}
        self.owners: dict[str, list[str]] = {}
        self.owner = ""
        self.keepalive: list[Any] = []
        self.cuda_devices: set[Any] = set()

    def key(self, path: str) -> str:
        """A unique tensor key for ``path``."""
        key, n = path, 1
        while key in self.tensors:
            key = f"{path}~{n}"
            n += 1
        return key

    def add(self, path: str, arr: np.ndarray) -> str:
        key = self.key(path)
        self.tensors[key] = arr
        self.owners.setdefault(self.owner, []).append(key)
        return key

    def capture_object(self, name: str, obj: Any) -> dict[str, Any]:
        torch = self.torch
        if torch is not None and isinstance(obj, torch.Tensor):
            return {"kind": "tensor", "tensor": self.encode(obj, name)}
        if isinstance(obj, np.ndarray):
            return {"kind": "ndarray", "array": self.encode(obj, name)}
        if isinstance(obj, random.Random):
            return {"kind": "random", "state": self.encode(obj.getstate(), name)}
        if isinstance(obj, np.random.Generator):
            return {"kind": "np_generator", "state": self.encode(obj.bit_generator.state, name)}
        if isinstance(obj, np.random.RandomState):
            return {
                "kind": "np_randomstate",
                "state": self.encode(obj.get_state(legacy=False), name),
            }
        if torch is not None and isinstance(obj, torch.Generator):
            return {"kind": "torch_generator", "state": self.encode(obj.get_state(), name)}
        scaler_state = _grad_scaler_state(torch, obj)
        if scaler_state is not None:
            return {
                "kind": "state_dict",
                "type": _type_name(obj),
                "state": {
                    k: self.tensor_placeholder(v, f"{name}/{k}", item=kind)
                    if isinstance(kind, str)
                    else self.encode(v, f"{name}/{k}")
                    for k, (v, kind) in scaler_state.items()
                },
            }
        if callable(getattr(obj, "state_dict", None)) and callable(
            getattr(obj, "load_state_dict", None)
        ):
            try:
                state = obj.state_dict()
            except Exception as e:
                raise CheckpointError(
                    f"{name!r}.state_dict() failed: {type(e).__name__}: {e}"
                ) from e
            return {
                "kind": "state_dict",
                "type": _type_name(obj),
                "state": self.encode(state, name),
            }
        return {"kind": "value", "value": self.encode(obj, name)}

    def capture_rng(self) -> dict[str, Any]:
        version, words, gauss = random.getstate()
        entry: dict[str, Any] = {
            "python": {
                "version": version,
                "state": self.add(f"{RNG_NAME}/python", np.array(words, dtype=np.uint32)),
                "gauss": self.encode(gauss, ""),
            }
        }
        name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
        entry["numpy"] = {
            "name": name,
            "state": self.add(f"{RNG_NAME}/numpy", np.array(key, dtype=np.uint32)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": self.encode(float(cached), ""),
        }
        torch = self.torch
        if torch is not None:
            entry["torch"] = self.add(f"{RNG_NAME}/torch", torch.get_rng_state().numpy().copy())
            # Only an initialised CUDA has state worth saving; asking otherwise
            # would initialise it (slow, and wrong in forked workers).
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                entry["cuda"] = [
                    self.add(f"{RNG_NAME}/cuda/{i}", s.numpy().copy())
                    for i, s in enumerate(torch.cuda.get_rng_state_all())
                ]
        return entry

    def record_events(self) -> list[Any]:
        """One CUDA event per device that has pending copies."""
        if not self.cuda_devices:
            return []
        torch = self.torch
        events = []
        for device in self.cuda_devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            events.append(event)
        return events

    def encode(self, value: Any, path: str) -> Any:
        """Tagged-JSON form of ``value``; tensors go to ``self.tensors``."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            if _INT64_MIN <= value <= _INT64_MAX:
                return int(value)
            return {"__t": "bigint", "v": str(int(value))}
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            return {"__t": "float", "v": repr(float(value))}
        torch = self.torch
        if torch is not None and isinstance(value, torch.Tensor):
            return self.tensor_placeholder(value, path)
        if isinstance(value, np.ndarray):
            return {"__t": "ndarray", "key": self.add(path, self.copy_array(value, path))}
        if isinstance(value, np.generic):
            return {
                "__t": "npscalar",
                "dtype": value.dtype.str,
                "v": self.encode(value.item(), path),
            }
        if isinstance(value, dict):
            items = [(k, self.encode(v, f"{path}/{k}")) for k, v in value.items()]
            if isinstance(value, OrderedDict):
                out: dict[str, Any] = {
                    "__t": "odict",
                    "v": [[self.encode(k, path), v] for k, v in items],
                }
                meta = getattr(value, "_metadata", None)
                if meta is not None:
                    out["meta"] = self.encode(meta, path)
                return out
            if all(isinstance(k, str) for k, _ in items) and "__t" not in value:
                return dict(items)
            return {"__t": "dict", "v": [[self.encode(k, path), v] for k, v in items]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if torch is not None and isinstance(value, torch.Size):
            return {"__t": "size", "v": [int(v) for v in value]}
        if isinstance(value, tuple):
            return {
                "__t": "tuple",
                "v": [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)],
            }
        if isinstance(value, (bytes, bytearray)):
            return {"__t": "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, (set, frozenset)):
            tag = "frozenset" if isinstance(value, frozenset) else "set"
            return {"__t": tag, "v": [self.encode(v, path) for v in value]}
        if isinstance(value, complex):
            return {
                "__t": "complex",
                "v": [self.encode(value.real, path), self.encode(value.imag, path)],
            }
        if isinstance(value, np.dtype):
            return {"__t": "npdtype", "v": value.str}
        if torch is not None and isinstance(value, torch.dtype):
            return {"__t": "dtype", "v": str(value)}
        if torch is not None and isinstance(value, torch.device):
            return {"__t": "device", "v": str(value)}
        raise CheckpointError(
            f"cannot checkpoint {path!r}: values of type {_type_name(value)} are not supported; "
            "register an object with state_dict()/load_state_dict(), an array, or a JSON-like value"
        )

    def copy_array(self, arr: np.ndarray, path: str) -> np.ndarray:
        if arr.dtype.kind not in "biufc" or arr.dtype.fields is not None:
            raise CheckpointError(
                f"cannot checkpoint array {path!r} of dtype {arr.dtype}; only numeric and bool arrays"
            )
        return np.array(arr, order="C", copy=True)

    def tensor_placeholder(self, t: Any, path: str, item: str | None = None) -> dict[str, Any]:
        """Copy ``t`` out; ``item`` ("float"/"int") restores it as a Python number."""
        torch = self.torch
        if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
            raise CheckpointError(
                f"cannot checkpoint tensor {path!r}: {t.layout} / {t.device} / quantized tensors are not supported"
            )
        t = t.detach()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        dtype_name = str(t.dtype).removeprefix("torch.")
        native = dtype_name in _NUMPY_TORCH_DTYPES
        if t.device.type == "cpu":
            # The training thread keeps mutating parameters in place: copy now.
            host = t.clone(memory_format=torch.contiguous_format)
        else:
            if t.device.type != "cuda":
                # Other accelerators (mps, xpu): a plain synchronous copy.
                host = t.to("cpu", copy=True).contiguous()
            else:
                # Stream-ordered async copy: later in-place updates on this
                # stream run after it, and the host does not wait.
                host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
                host.copy_(t, non_blocking=True)
                self.cuda_devices.add(t.device)
                self.keepalive.append(host)
        if native:
            arr = host.numpy()
        else:
            size = t.element_size()
            if size not in _SIGNED_TORCH_OF_SIZE:
                raise CheckpointError(f"cannot checkpoint tensor {path!r} of dtype {t.dtype}")
            arr = (
                host.view(getattr(torch, _SIGNED_TORCH_OF_SIZE[size]))
                .numpy()
                .view(_UINT_OF_SIZE[size])
            )
        out: dict[str, Any] = {
            "__t": "tensor",
            "key": self.add(path, arr),
            "dtype": str(t.dtype),
            "device": str(t.device),
        }
        if t.requires_grad:
            out["grad"] = True
        if item is not None:
            out["item"] = item
        return out


def _grad_scaler_state(torch: Any, obj: Any) -> dict[str, tuple[Any, str | None]] | None:
    """A GradScaler's state_dict as (value, item kind), without ``.item()``.

    ``GradScaler.state_dict()`` reads its scale and growth tracker with
    ``.item()``, which synchronises with the GPU; copying the tensors
    asynchronously and turning them into numbers at restore avoids that. None
    when ``obj`` is not an enabled GradScaler with its tensors created.
    """
    scaler_type = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if scaler_type is None or not isinstance(obj, scaler_type) or not obj.is_enabled():
        return None
    scale = getattr(obj, "_scale", None)
    tracker = getattr(obj, "_growth_tracker", None)
    if not isinstance(scale, torch.Tensor) or not isinstance(tracker, torch.Tensor):
        return None
    return {
        "scale": (scale, "float"),
        "growth_factor": (obj._growth_factor, None),
        "backoff_factor": (obj._backoff_factor, None),
        "growth_interval": (obj._growth_interval, None),
        "_growth_tracker": (tracker, "int"),
    }


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- restore -------------------------------------------------------------------


class _Decoder:
    """Rebuilds values from the tagged JSON form and the flat tensors."""

    def __init__(self, tensors: dict[str, np.ndarray], torch: Any) -> None:
        self.tensors = tensors
        self.torch = torch

    def load_torch(self) -> Any:
        """torch, imported only when a checkpoint holds torch values."""
        if self.torch is None:
            import torch

            self.torch = torch
        return self.torch

    def array(self, key: str) -> np.ndarray:
        try:
            return self.tensors[key]
        except KeyError:
            raise CheckpointError(
                f"checkpoint is missing tensor {key!r}; the blob chain is incomplete"
            ) from None

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = value.get("__t")
        if tag is None:
            return {k: self.decode(v) for k, v in value.items()}
        v: Any = value.get("v")
        if tag == "tuple":
            return tuple(self.decode(x) for x in v)
        if tag == "dict":
            return {self.decode(k): self.decode(x) for k, x in v}
        if tag == "odict":
            out: OrderedDict[Any, Any] = OrderedDict((self.decode(k), self.decode(x)) for k, x in v)
            if "meta" in value:
                out._metadata = self.decode(value["meta"])  # type: ignore[attr-defined]
            return out
        if tag == "float":
            return float(v)
        if tag == "bigint":
            return int(v)
        if tag == "bytes":
            return base64.b64decode(v)
        if tag == "set":
            return {self.decode(x) for x in v}
        if tag == "frozenset":
            return frozenset(self.decode(x) for x in v)
        if tag == "complex":
            return complex(self.decode(v[0]), self.decode(v[1]))
        if tag == "npscalar":
            return np.dtype(value["dtype"]).type(self.decode(v))
        if tag == "npdtype":
            return np.dtype(v)
        if tag == "ndarray":
            return self.array(value["key"]).copy()
        if tag in ("tensor", "size", "dtype", "device"):
            torch = self.load_torch()
            if tag == "tensor":
                return self.tensor(value)
            if tag == "size":
                return torch.Size(v)
            if tag == "dtype":
                return _torch_dtype(torch, v)
            return torch.device(v)
        raise CheckpointError(f"corrupt checkpoint skeleton: unknown tag {tag!r}")

    def tensor(self, placeholder: dict[str, Any]) -> Any:
        arr = self.array(placeholder["key"])
        if placeholder.get("item") == "float":
            return float(arr.reshape(-1)[0])
        if placeholder.get("item") == "int":
            return int(arr.reshape(-1)[0])
        torch = self.load_torch()
        dtype = _torch_dtype(torch, placeholder["dtype"])
        name = placeholder["dtype"].removeprefix("torch.")
        if name in _NUMPY_TORCH_DTYPES:
            t = torch.from_numpy(np.array(arr, copy=True))
        else:
            # Bits came as unsigned ints; torch lacks some unsigned widths, so
            # go through the signed int of that width.
            t = torch.from_numpy(
                np.array(arr, copy=True).view(_numpy_signed(arr.dtype.itemsize))
            ).view(dtype)
        if t.dtype != dtype:
            raise CheckpointError(
                f"checkpoint tensor {placeholder['key']!r} has dtype {t.dtype}, expected {dtype}"
            )
        device = _restore_device(torch, placeholder.get("device", "cpu"))
        if device != "cpu":
            t = t.to(device)
        if placeholder.get("grad"):
            t.requires_grad_(True)
        return t


def _numpy_signed(size: int) -> str:
    return {1: "<u1", 2: "<i2", 4: "<i4", 8: "<i8"}[size]


def _torch_dtype(torch: Any, text: str) -> Any:
    dtype = getattr(torch, str(text).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"corrupt checkpoint skeleton: unknown torch dtype {text!r}")
    return dtype


def _restore_device(torch: Any, recorded: str) -> str:
    """The recorded device if this machine has it, else the CPU.

    ``load_state_dict`` moves tensors onto the live parameters' devices anyway,
    so a checkpoint from a GPU run restores on a CPU-only machine.
    """
    if recorded.startswith("cuda") and torch.cuda.is_available():
        index = int(recorded.partition(":")[2] or 0)
        return recorded if index < torch.cuda.device_count() else "cuda"
    return "cpu"


def _restore_object(name: str, obj: Any, entry: dict[str, Any], dec: _Decoder) -> None:
    kind = entry["kind"]
    if kind == "state_dict":
        if not callable(getattr(obj, "load_state_dict", None)):
            raise CheckpointError(
                f"cannot restore {name!r}: the live object has no load_state_dict()"
            )
        obj.load_state_dict(dec.decode(entry["state"]))
    elif kind == "ndarray":
        saved = dec.array(entry["array"]["key"])
        if not isinstance(obj, np.ndarray) or obj.shape != saved.shape:
            raise CheckpointError(
                f"cannot restore array {name!r} in place: live {getattr(obj, 'shape', type(obj).__name__)}, saved {saved.shape}"
            )
        obj[...] = saved
    elif kind == "tensor":
        saved = dec.decode(entry["tensor"])
        torch = dec.load_torch()
        if not isinstance(obj, torch.Tensor) or obj.shape != saved.shape:
            raise CheckpointError(
                f"cannot restore tensor {name!r} in place: live {getattr(obj, 'shape', type(obj).__name__)}, saved {tuple(saved.shape)}"
            )
        with torch.no_grad():
            obj.copy_(saved)
    elif kind == "random":
        obj.setstate(dec.decode(entry["state"]))
    elif kind == "np_generator":
        obj.bit_generator.state = dec.decode(entry["state"])
    elif kind == "np_randomstate":
        obj.set_state(dec.decode(entry["state"]))
    elif kind == "torch_generator":
        obj.set_state(dec.decode(entry["state"]).cpu())
    else:
        raise CheckpointError(
            f"corrupt checkpoint skeleton: unknown object kind {kind!r} for {name!r}"
        )


def _restore_rng(entry: dict[str, Any], dec: _Decoder) -> None:
    py = entry["python"]
    words = tuple(int(w) for w in dec.array(py["state"]))
    random.setstate((py["version"], words, dec.decode(py["gauss"])))
    npr = entry["numpy"]
    np.random.set_state(
        (
            npr["name"],
            dec.array(npr["state"]).copy(),
            npr["pos"],
            npr["has_gauss"],
            dec.decode(npr["cached"]),
        )
    )
    if "torch" in entry:
        torch = dec.load_torch()
        torch.set_rng_state(torch.from_numpy(dec.array(entry["torch"]).copy()))
        cuda = entry.get("cuda")
        # A replay on a machine without (as many) GPUs restores what it can.
        if cuda and torch.cuda.is_available():
            for i, key in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(torch.from_numpy(dec.array(key).copy()), i)
