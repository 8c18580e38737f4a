"""Codecs that turn a flat ``dict[str, np.ndarray]`` into self-describing blobs.

Checkpoints of one (run, object) form a *chain*: a keyframe holds every tensor
in full, each later blob only what changed since the previous one, and a new
keyframe starts every ``keyframe_every`` blobs so a restore never reads more
than that many blobs. Three codecs:

``none``
    Raw little-endian bytes; every blob is a keyframe.
``lossless`` (default)
    Bit-exact. Each tensor's bit pattern, read as integers, is delta-coded
    against its value in the previous blob (wrapping subtraction, then zigzag
    so small negative deltas are small too): slowly-changing floats share
    sign, exponent and high mantissa bits, so the delta's high bytes are
    mostly zero. The result is byte-shuffled (bytes of equal significance
    together, so those zeros form long runs) and compressed with zstd.
    Keyframes skip the delta. Integer subtraction measured 3-4% smaller than
    XOR of the bit patterns (a carry flips many XOR bits, but changes the
    difference by one; docs/checkpointing.md).
``lc``
    Lossy, after LC-checkpoint (Chen et al., ICML 2020). Each float tensor of at
    least ``LC_MIN_ELEMENTS`` elements stores the delta against the
    *reconstructed* previous state, so quantisation error is carried into the
    next delta instead of accumulating. Deltas are bucketed by sign and binary
    exponent; only the ``2^b - 1`` buckets of largest exponent are kept (each
    represented by the mean of its members), the rest become zero; bucket ids
    are Huffman-coded. Keyframes, integer and small tensors are lossless.

Blob layout (little-endian)::

    0   4  magic b"FLCK"
    4   1  format version (1)
    5   1  codec id (0 none, 1 lossless, 2 lc)
    6   1  kind (0 keyframe, 1 delta)
    7   1  flags (bit 0: approximate, i.e. lossy since the keyframe)
    8   4  header length H
    12  H  UTF-8 JSON: {"t": [[name, dtype, shape, enc, section_bytes], ...]}
    ..     one section per tensor, in header order

Section encodings (``enc``): ``raw`` (plain bytes), ``z`` (zstd of the
byte-shuffled bytes), ``d`` (zstd of the byte-shuffled zigzag integer delta
against the previous value), ``lc`` (u8 bucket count K, u8 flags, K bucket values in the tensor's
dtype, then the Huffman stream of bucket ids, zstd-compressed when flag bit 0).
Decoding reads only JSON, numbers and bytes; nothing is unpickled.

Example:
    >>> import numpy as np
    >>> enc = ChainEncoder("lossless", keyframe_every=4)
    >>> blobs = [enc.encode({"w": np.arange(4, dtype=np.float32) + i}).data for i in range(3)]
    >>> decode_chain(blobs)["w"].tolist()
    [2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zstandard

from flordb.checkpoint import huffman
from flordb.errors import CheckpointError

MAGIC = b"FLCK"
FORMAT_VERSION = 1
CODECS = ("none", "lossless", "lc")
_CODEC_IDS = {name: i for i, name in enumerate(CODECS)}
_PREFIX = struct.Struct("<4sBBBBI")

#: Float tensors smaller than this stay lossless under ``lc``: step counters,
#: biases and norms are cheap to store exactly and sensitive to error.
LC_MIN_ELEMENTS = 1024

#: Whether ``lc`` also applies to optimizer state (momentum, Adam moments).
#: Measured on an MLP with Adam (docs/checkpointing.md): Adam's second moment
#: is positive and spans many binades, so 7 kept buckets zero most of it and a
#: restored run drifts visibly, while lossless deltas of optimizer state
#: already compress well. Hence optimizer state stays lossless by default.
LC_OPTIMIZER_STATE = False

# Elements per step of the chunked loops: small enough that a chunk's
# temporaries stay in cache.
_CHUNK = 1 << 16

# lc bucket keys: 2 * (binary exponent + offset) + sign, all below _LC_KEYS.
_LC_EXP_OFFSET = 1100
_LC_KEYS = 2 * (1024 + _LC_EXP_OFFSET) + 2

#: zstd level: level 1 is within a few percent of level 3 on shuffled
#: deltas and runs about twice as fast (docs/checkpointing.md).
ZSTD_LEVEL = 1


@dataclass(frozen=True)
class EncodedBlob:
    """One encoded checkpoint of a chain."""

    data: bytes
    kind: Literal["key", "delta"]
    raw_bytes: int
    stored_bytes: int
    approximate: bool
    codec: str = "lossless"


def object_codec(codec: str, obj: Any, lc_optimizer: bool = LC_OPTIMIZER_STATE) -> str:
    """The codec to use for one registered object's chain under setting ``codec``.

    Under ``lc``, optimizers stay ``lossless`` unless ``lc_optimizer``.

    Example:
        >>> object_codec("lc", object())
        'lc'
    """
    _check_codec(codec)
    if codec == "lc" and not lc_optimizer:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.optim.Optimizer):
            return "lossless"
    return codec


class ChainEncoder:
    """Encodes successive states of one object into a keyframe/delta chain.

    The encoder keeps the previous state (the *reconstructed* one under
    ``lc``) by reference: do not mutate arrays after passing them to
    :meth:`encode`. Call :meth:`force_keyframe` when a blob could not be
    stored, so the chain does not depend on it.
    """

    def __init__(
        self,
        codec: str = "lossless",
        keyframe_every: int = 8,
        lc_bits: int = 3,
        *,
        zstd_level: int = ZSTD_LEVEL,
        zstd_threads: int = 0,
    ) -> None:
        _check_codec(codec)
        if keyframe_every < 1:
            raise CheckpointError(f"keyframe_every must be >= 1, received {keyframe_every}")
        if lc_bits not in (1, 2, 3):
            raise CheckpointError(
                f"lc_bits must be 2 or 3 (1 allowed), received {lc_bits}; set FLORDB_LC_BITS=2 or 3"
            )
        self.codec = codec
        self.keyframe_every = keyframe_every
        self.lc_bits = lc_bits
        self._zstd = zstandard.ZstdCompressor(level=zstd_level, threads=zstd_threads)
        self._prev: dict[str, np.ndarray] | None = None
        self._since_key = 0
        self._approx = False

    def force_keyframe(self) -> None:
        """Make the next blob a keyframe (e.g. after a failed write)."""
        self._prev = None
        self._since_key = 0
        self._approx = False

    def encode(self, tensors: dict[str, np.ndarray]) -> EncodedBlob:
        """Encode the next state of the chain."""
        key = (
            self.codec == "none" or self._prev is None or self._since_key % self.keyframe_every == 0
        )
        prev = {} if key else (self._prev or {})
        entries: list[list[Any]] = []
        sections: list[bytes] = []
        new_state: dict[str, np.ndarray] = {}
        approx = False if key else self._approx
        raw = 0
        for name, value in tensors.items():
            if not isinstance(name, str):
                raise CheckpointError(f"tensor names must be str, received {name!r}")
            arr = _as_storable(name, value)
            raw += arr.nbytes
            enc, section, recon = self._encode_one(arr, prev.get(name))
            approx = approx or enc == "lc"
            entries.append([name, arr.dtype.str, list(arr.shape), enc, len(section)])
            sections.append(section)
            new_state[name] = recon
        header = json.dumps({"t": entries}, separators=(",", ":")).encode()
        prefix = _PREFIX.pack(
            MAGIC,
            FORMAT_VERSION,
            _CODEC_IDS[self.codec],
            0 if key else 1,
            1 if approx else 0,
            len(header),
        )
        data = b"".join([prefix, header, *sections])
        # Commit the chain state only once everything encoded, so an error
        # halfway leaves the encoder consistent with the blobs it returned.
        self._prev = None if self.codec == "none" else new_state
        self._since_key = 1 if key else self._since_key + 1
        self._approx = approx
        return EncodedBlob(
            data=data,
            kind="key" if key else "delta",
            raw_bytes=raw,
            stored_bytes=len(data),
            approximate=approx,
            codec=self.codec,
        )

    def _encode_one(
        self, arr: np.ndarray, prev: np.ndarray | None
    ) -> tuple[str, bytes, np.ndarray]:
        """(enc, section, state the decoder will hold) for one tensor."""
        if self.codec == "none":
            return "raw", arr.tobytes(), arr
        usable = prev is not None and prev.dtype == arr.dtype and prev.shape == arr.shape
        if not usable:
            return "z", self._zstd.compress(_shuffled(arr)), arr  # type: ignore[arg-type]  # stub omits buffer-protocol objects
        assert prev is not None
        if self.codec == "lc" and arr.dtype.kind == "f" and arr.size >= LC_MIN_ELEMENTS:
            quantised = _lc_encode(arr, prev, self.lc_bits, self._zstd)
            if quantised is not None:
                return "lc", quantised[0], quantised[1]
        return "d", self._zstd.compress(_shuffled(arr, prev)), arr  # type: ignore[arg-type]  # stub omits buffer-protocol objects


def decode_chain(blobs: list[bytes]) -> dict[str, np.ndarray]:
    """Decode the state at the last blob, given the blobs from its keyframe on.

    Raises CheckpointError if the first blob is not a keyframe or any blob is
    malformed.
    """
    if not blobs:
        raise CheckpointError("decode_chain needs at least one blob (a keyframe)")
    dctx = zstandard.ZstdDecompressor()
    state: dict[str, np.ndarray] = {}
    for i, blob in enumerate(blobs):
        info = _parse(blob)
        if i == 0 and info["kind"] != "key":
            raise CheckpointError(
                "checkpoint chain does not start with a keyframe; pass the blobs from the last keyframe on"
            )
        if i > 0 and info["kind"] == "key":
            state = {}
        state = _decode_blob(blob, info, state, dctx)
    return state


def blob_info(data: bytes) -> dict[str, Any]:
    """Codec, kind, approximate flag and tensor list of a blob, without decoding.

    Example:
        >>> import numpy as np
        >>> blob_info(ChainEncoder("none").encode({"a": np.zeros(2)}).data)["kind"]
        'key'
    """
    info = _parse(data)
    return {k: v for k, v in info.items() if k not in ("offset",)}


# -- internals ---------------------------------------------------------------


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise CheckpointError(
            f"unknown checkpoint codec {codec!r}; use one of {', '.join(CODECS)} (FLORDB_CODEC)"
        )


def _as_storable(name: str, value: Any) -> np.ndarray:
    """A C-contiguous little-endian array of a plain numeric dtype."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc" or arr.dtype.fields is not None:
        raise CheckpointError(
            f"tensor {name!r} has dtype {arr.dtype}, which checkpoints cannot store; use a numeric or bool array"
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns 0-d arrays (step counters) into 1-d.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _int_view(arr: np.ndarray) -> np.ndarray:
    """The array's bits as signed-int lanes, as wide as possible (<= 8 bytes)."""
    size = arr.dtype.itemsize
    width = next(w for w in (8, 4, 2, 1) if size % w == 0)
    return arr.reshape(-1).view(f"<i{width}")


def _zigzag(x: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Zigzag of the wrapping difference ``x - base``, as unsigned lanes."""
    d = x - base  # numpy integer arrays wrap silently
    sign = d >> (d.dtype.itemsize * 8 - 1)
    d <<= 1
    d ^= sign
    return d.view(d.dtype.str.replace("i", "u"))


def _unzigzag(z: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_zigzag`: ``base`` plus the decoded difference."""
    signed = base.dtype
    d = (z >> 1).view(signed)
    d ^= -(z & 1).view(signed)
    d += base
    return d


def _shuffled(arr: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Byte-shuffled lanes of ``arr`` (zigzag deltas against ``prev`` if given).

    Row k of the (lane bytes, lanes) result holds byte k of every lane: bytes
    of equal significance together (the HDF5/blosc shuffle). Worked in chunks
    that stay in cache: on large tensors that is several times faster than
    whole-array numpy passes, and keeps temporaries small.
    """
    lanes = _int_view(arr)
    base = None if prev is None else _int_view(prev)
    size, n = lanes.dtype.itemsize, lanes.size
    out = np.empty((size, n), dtype=np.uint8)
    for s in range(0, n, _CHUNK):
        x = lanes[s : s + _CHUNK]
        if base is not None:
            x = _zigzag(x, base[s : s + _CHUNK])
        out[:, s : s + len(x)] = x.view(np.uint8).reshape(-1, size).T
    return out


def _unshuffled(
    data: bytes, dtype: np.dtype, shape: tuple[int, ...], prev: np.ndarray | None = None
) -> np.ndarray:
    """Inverse of :func:`_shuffled`: a new writable array of ``dtype``/``shape``."""
    out = np.empty(shape, dtype=dtype)
    lanes = _int_view(out)
    base = None if prev is None else _int_view(prev)
    size, n = lanes.dtype.itemsize, lanes.size
    src = np.frombuffer(data, dtype=np.uint8)
    if src.size != n * size:
        raise CheckpointError(
            f"corrupt checkpoint section: {src.size} bytes for {out.size} x {dtype}"
        )
    src = src.reshape(size, n)
    unsigned = lanes.dtype.str.replace("i", "u")
    for s in range(0, n, _CHUNK):
        x = np.ascontiguousarray(src[:, s : s + _CHUNK].T).view(unsigned).reshape(-1)
        if base is not None:
            x = _unzigzag(x, base[s : s + _CHUNK])
        lanes[s : s + len(x)] = x.view(lanes.dtype)
    return out


def _lc_encode(
    arr: np.ndarray, prev: np.ndarray, bits: int, zstd: zstandard.ZstdCompressor
) -> tuple[bytes, np.ndarray] | None:
    """LC-quantise ``arr - prev``; None when the delta is not finite."""
    work = np.float64 if arr.dtype == np.float64 else np.float32
    flat, base = arr.reshape(-1), prev.reshape(-1)
    n = flat.size
    # Bucket key: 2 * (exponent + offset) + sign, key 0 for an exact zero; the
    # offset keeps every float64 exponent (>= -1074) positive, and all keys
    # fit an int16. Pass 1 counts and sums the deltas of every bucket.
    keys = np.empty(n, dtype=np.int16)
    counts = np.zeros(_LC_KEYS, dtype=np.int64)
    sums = np.zeros(_LC_KEYS, dtype=np.float64)
    for s in range(0, n, _CHUNK):
        delta = flat[s : s + _CHUNK].astype(work) - base[s : s + _CHUNK].astype(work)
        if not np.isfinite(delta).all():
            return None
        _, exponent = np.frexp(delta)
        k = (exponent.astype(np.int16) + _LC_EXP_OFFSET) * 2 + (delta < 0)
        k[delta == 0] = 0
        keys[s : s + len(k)] = k
        counts += np.bincount(k, minlength=_LC_KEYS)
        sums += np.bincount(k, weights=delta, minlength=_LC_KEYS)
    nonzero = np.flatnonzero(counts[1:]) + 1
    # Priority promotion: keep the 2^b - 1 buckets of largest exponent (the
    # fuller sign first on a tie); the rest go to the zero bucket and their
    # deltas carry over into the next checkpoint's delta.
    order = np.lexsort((-counts[nonzero], -(nonzero >> 1)))
    keep = nonzero[order][: (1 << bits) - 1]
    lut = np.zeros(_LC_KEYS, dtype=np.uint8)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint8)
    reps = np.zeros(len(keep) + 1, dtype=arr.dtype)
    reps[1:] = (sums[keep] / counts[keep]).astype(arr.dtype)
    ids = np.empty(n, dtype=np.uint8)
    for s in range(0, n, _CHUNK):
        ids[s : s + _CHUNK] = lut[keys[s : s + _CHUNK]]
    recon = _lc_apply(prev, reps, ids)
    stream = huffman.encode(ids, len(reps))
    packed = zstd.compress(stream)
    flags = 0
    if len(packed) < len(stream):
        stream, flags = packed, 1
    section = struct.pack("<BB", len(keep), flags) + reps[1:].tobytes() + stream
    return section, recon


def _lc_apply(prev: np.ndarray, reps: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ũ_t = ũ_{t-1} + Q(δ_t); encoder and decoder run exactly this."""
    out = np.empty(prev.shape, dtype=prev.dtype)
    flat, base = out.reshape(-1), prev.reshape(-1)
    for s in range(0, flat.size, _CHUNK):
        np.add(base[s : s + _CHUNK], reps[ids[s : s + _CHUNK]], out=flat[s : s + _CHUNK])
    return out


def _lc_decode(
    section: bytes, dtype: np.dtype, prev: np.ndarray, dctx: zstandard.ZstdDecompressor
) -> np.ndarray:
    n_keep, flags = struct.unpack_from("<BB", section, 0)
    reps = np.zeros(n_keep + 1, dtype=dtype)
    reps[1:] = np.frombuffer(section, dtype=dtype, count=n_keep, offset=2)
    stream = section[2 + n_keep * dtype.itemsize :]
    if flags & 1:
        # A Huffman stream takes at most 2 bytes per symbol plus its header.
        stream = _decompress(dctx, stream, None, limit=3 * prev.size + 1024)
    ids = huffman.decode(stream)
    if ids.size != prev.size or (ids.size and int(ids.max()) > n_keep):
        raise CheckpointError("corrupt lc checkpoint section: bucket ids do not match the tensor")
    return _lc_apply(prev, reps, ids)


def _decompress(
    dctx: zstandard.ZstdDecompressor, section: Any, expected: int | None, limit: int = 0
) -> bytes:
    """zstd-decompress a section that must hold ``expected`` (or <= ``limit``) bytes.

    The size is checked against the frame header first, so a corrupt blob
    cannot make us allocate an arbitrary amount of memory.
    """
    try:
        size = zstandard.frame_content_size(section)
    except zstandard.ZstdError as e:
        raise CheckpointError(f"corrupt compressed checkpoint section: {e}") from e
    if expected is None and 0 <= size <= limit:
        return dctx.decompress(section)
    if size != expected:
        raise CheckpointError(
            f"corrupt checkpoint section: holds {size} bytes, expected {expected}"
        )
    return dctx.decompress(section)


def _parse(data: bytes) -> dict[str, Any]:
    try:
        magic, version, codec_id, kind, flags, hlen = _PREFIX.unpack_from(data, 0)
    except struct.error as e:
        raise CheckpointError(f"checkpoint blob too short ({len(data)} bytes)") from e
    if magic != MAGIC:
        raise CheckpointError("not a flordb checkpoint blob (bad magic)")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint blob format {version} is not supported (expected {FORMAT_VERSION}); upgrade flordb"
        )
    if codec_id >= len(CODECS) or kind > 1:
        raise CheckpointError(f"corrupt checkpoint blob header (codec {codec_id}, kind {kind})")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + hlen]))
        tensors = [
            (str(n), np.dtype(d), tuple(int(x) for x in s), str(e), int(ln))
            for n, d, s, e, ln in header["t"]
        ]
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"corrupt checkpoint blob header: {e}") from e
    for name, dtype, shape, _, _ in tensors:
        # Only plain numeric dtypes: never object arrays from a file.
        if dtype.kind not in "biufc" or dtype.fields is not None or min(shape, default=0) < 0:
            raise CheckpointError(
                f"corrupt checkpoint blob header: tensor {name!r} is {dtype}{shape}"
            )
    return {
        "codec": CODECS[codec_id],
        "kind": "key" if kind == 0 else "delta",
        "approximate": bool(flags & 1),
        "tensors": tensors,
        "offset": _PREFIX.size + hlen,
    }


def _decode_blob(
    data: bytes, info: dict[str, Any], prev: dict[str, np.ndarray], dctx: zstandard.ZstdDecompressor
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    pos = info["offset"]
    view = memoryview(data)
    for name, dtype, shape, enc, length in info["tensors"]:
        section = view[pos : pos + length]
        if len(section) != length:
            raise CheckpointError(f"checkpoint blob is truncated in tensor {name!r}")
        pos += length
        try:
            if enc == "raw":
                out[name] = _unshuffle_plain(section, dtype, shape)
            elif enc == "z":
                raw = _decompress(dctx, section, _nbytes(dtype, shape))
                out[name] = _unshuffled(raw, dtype, shape)
            elif enc in ("d", "lc"):
                base = prev.get(name)
                if base is None or base.dtype != dtype or base.shape != shape:
                    raise CheckpointError(
                        f"delta for tensor {name!r} has no matching previous value; the chain is broken"
                    )
                if enc == "d":
                    raw = _decompress(dctx, section, _nbytes(dtype, shape))
                    out[name] = _unshuffled(raw, dtype, shape, base)
                else:
                    out[name] = _lc_decode(bytes(section), dtype, base, dctx)
            else:
                raise CheckpointError(f"unknown tensor encoding {enc!r} in checkpoint blob")
        except zstandard.ZstdError as e:
            raise CheckpointError(f"corrupt compressed data in tensor {name!r}: {e}") from e
    return out


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _unshuffle_plain(section: memoryview, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if len(section) != _nbytes(dtype, shape):
        raise CheckpointError(
            f"corrupt checkpoint section: {len(section)} bytes for {shape} x {dtype}"
        )
    return np.frombuffer(section, dtype=dtype).reshape(shape).copy()
