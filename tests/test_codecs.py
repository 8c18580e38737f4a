"""Codecs: exact chains across keyframes, lc error bounds, Huffman, compression."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import zstandard

from flordb.checkpoint import huffman
from flordb.checkpoint.codecs import (
    LC_MIN_ELEMENTS,
    ChainEncoder,
    _lc_encode,
    blob_info,
    decode_chain,
    object_codec,
)
from flordb.checkpoint.snapshot import take_snapshot
from flordb.errors import CheckpointError

DTYPES = ["<f4", "<f8", "<f2", "<u2", "<i8", "<i4", "|u1", "|i1", "|b1", "<c8", "<c16"]


def sample(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], t: int) -> np.ndarray:
    """A value that drifts with t, like a parameter under training."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(dt)
    if dt.kind in "iu":
        return (rng.integers(0, 50, shape) + t).astype(dt)
    base = np.linspace(-3, 3, int(np.prod(shape))).reshape(shape)
    value = base + 0.01 * t + 1e-3 * rng.standard_normal(shape)
    if dt.kind == "c":
        value = value + 1j * value[::-1]
    return value.astype(dt)


def last_key(blobs: list) -> int:
    return max(i for i, b in enumerate(blobs) if b.kind == "key")


@pytest.mark.parametrize("codec", ["none", "lossless", "lc"])
def test_chain_decodes_exactly_across_keyframes(codec: str) -> None:
    rng = np.random.default_rng(0)
    enc = ChainEncoder(codec, keyframe_every=3)
    blobs, states = [], []
    for t in range(10):
        # Small tensors, so even lc keeps them exact.
        state = {d: sample(rng, d, (5, 7), t) for d in DTYPES}
        state["scalar"] = np.array(t, dtype=np.int64)
        state["empty"] = np.zeros((0, 3), dtype=np.float32)
        blobs.append(enc.encode(state))
        states.append(state)
    kinds = [b.kind for b in blobs]
    assert kinds == (["key"] * 10 if codec == "none" else ["key", "delta", "delta"] * 3 + ["key"])
    for t in range(10):
        start = t if codec == "none" else t - t % 3
        got = decode_chain([b.data for b in blobs[start : t + 1]])
        assert list(got) == list(states[t])
        for name, want in states[t].items():
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            assert got[name].tobytes() == want.tobytes(), (t, name)
            assert got[name].flags.writeable
    assert not any(b.approximate for b in blobs)


def test_changing_tensor_sets_and_odd_inputs() -> None:
    enc = ChainEncoder("lossless", keyframe_every=8)
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    states = [
        {"a": a},
        {"a": a.T, "b": np.ones(3)},  # non-contiguous, new tensor
        {"a": a[:2] + 1, "b": np.ones(3).astype(">f8")},  # new shape, big-endian
        {"b": np.zeros(3)},  # tensor dropped
    ]
    blobs = []
    for i, state in enumerate(states):
        blobs.append(enc.encode(state).data)
        got = decode_chain(blobs)
        assert set(got) == set(state)
        for k, v in state.items():
            assert np.array_equal(got[k], v) and got[k].shape == v.shape, (i, k)


def test_decode_errors() -> None:
    enc = ChainEncoder("lossless")
    key = enc.encode({"w": np.ones(4)}).data
    delta = enc.encode({"w": np.ones(4) * 2}).data
    with pytest.raises(CheckpointError, match="keyframe"):
        decode_chain([delta])
    with pytest.raises(CheckpointError):
        decode_chain([])
    with pytest.raises(CheckpointError, match="magic"):
        decode_chain([b"XXXX" + key[4:]])
    with pytest.raises(CheckpointError):
        decode_chain([key[:-3]])
    with pytest.raises(CheckpointError, match="format"):
        decode_chain([key[:4] + bytes([99]) + key[5:]])
    with pytest.raises(CheckpointError, match="unknown checkpoint codec"):
        ChainEncoder("gzip")
    with pytest.raises(CheckpointError, match="dtype object"):
        enc.encode({"o": np.array([object()])})
    # The failed encode left the chain consistent.
    nxt = enc.encode({"w": np.ones(4) * 3}).data
    assert decode_chain([key, delta, nxt])["w"].tolist() == [3.0] * 4


def test_blob_is_self_describing() -> None:
    enc = ChainEncoder("lc", keyframe_every=4, lc_bits=2)
    w = np.linspace(0, 1, 4096, dtype=np.float32)
    enc.encode({"w": w, "n": np.array(3)})
    blob = enc.encode({"w": w * 1.01, "n": np.array(4)})
    info = blob_info(blob.data)
    assert info["codec"] == "lc" and info["kind"] == "delta" and info["approximate"]
    assert [(t[0], str(t[1]), t[2], t[3]) for t in info["tensors"]] == [
        ("w", "float32", (4096,), "lc"),
        ("n", "int64", (), "d"),
    ]
    assert (
        blob.approximate and blob.raw_bytes == w.nbytes + 8 and blob.stored_bytes == len(blob.data)
    )


def test_force_keyframe() -> None:
    enc = ChainEncoder("lossless", keyframe_every=8)
    assert enc.encode({"w": np.ones(2)}).kind == "key"
    assert enc.encode({"w": np.ones(2)}).kind == "delta"
    enc.force_keyframe()
    assert enc.encode({"w": np.ones(2)}).kind == "key"


def test_object_codec() -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert object_codec("lc", model) == "lc"
    assert object_codec("lc", opt) == "lossless"
    assert object_codec("lc", opt, lc_optimizer=True) == "lc"
    assert object_codec("lossless", opt) == "lossless"
    with pytest.raises(CheckpointError):
        object_codec("zip", model)


# -- lc ------------------------------------------------------------------------


def trajectory(rng: np.random.Generator, n: int = 20000, steps: int = 21):
    """A parameter vector under training: drift plus noise."""
    u = (0.05 * rng.standard_normal(n)).astype(np.float32)
    drift = (0.002 * rng.standard_normal(n)).astype(np.float32)
    for _ in range(steps):
        u = (u + drift + 0.001 * rng.standard_normal(n)).astype(np.float32)
        yield u


@pytest.mark.parametrize("bits,bound", [(2, 0.12), (3, 0.03)])
def test_lc_error_is_bounded_and_does_not_accumulate(bits: int, bound: float) -> None:
    rng = np.random.default_rng(1)
    enc = ChainEncoder("lc", keyframe_every=100, lc_bits=bits)
    zstd = zstandard.ZstdCompressor()
    blobs, lc_err, naive_err = [], [], []
    naive = prev = None
    for u in trajectory(rng):
        blobs.append(enc.encode({"w": u}).data)
        got = decode_chain(blobs)["w"]
        # Naive delta coding quantises u_t - u_{t-1}, ignoring the error so far.
        if prev is None:
            naive = u.copy()
        else:
            _, recon = _lc_encode(u, prev, bits, zstd)
            naive = naive + (recon - prev)
        prev = u.copy()
        lc_err.append(np.linalg.norm(got - u) / np.linalg.norm(u))
        naive_err.append(np.linalg.norm(naive - u) / np.linalg.norm(u))
    assert lc_err[0] == 0  # the keyframe is lossless
    assert max(lc_err) <= bound
    assert lc_err[-1] <= 1.5 * max(lc_err[1:4])  # flat, not growing
    assert naive_err[-1] >= 3 * lc_err[-1]  # while naive deltas drift away


def test_lc_keeps_small_integer_and_non_finite_tensors_exact() -> None:
    enc = ChainEncoder("lc", keyframe_every=8, lc_bits=3)
    rng = np.random.default_rng(2)
    big = rng.standard_normal(LC_MIN_ELEMENTS).astype(np.float32)
    states = []
    blobs = []
    for t in range(4):
        big = big + np.float32(0.01) * rng.standard_normal(big.size).astype(np.float32)
        weird = big.copy()
        weird[t] = np.inf if t % 2 else np.nan
        state = {
            "big": big,
            "small": rng.standard_normal(LC_MIN_ELEMENTS - 1).astype(np.float32),
            "ints": rng.integers(0, 9, 5000),
            "weird": weird,
        }
        states.append(state)
        blobs.append(enc.encode(state))
    got = decode_chain([b.data for b in blobs])
    for name in ("small", "ints", "weird"):
        assert got[name].tobytes() == states[-1][name].tobytes(), name
    assert got["big"].tobytes() != states[-1]["big"].tobytes()
    assert blobs[-1].approximate and not blobs[0].approximate


def test_lc_bf16_and_fp16_stay_within_dtype() -> None:
    rng = np.random.default_rng(3)
    enc = ChainEncoder("lc", keyframe_every=8, lc_bits=3)
    w = rng.standard_normal(4096).astype(np.float16)
    blobs = []
    for _ in range(5):
        w = (w + np.float16(0.01) * rng.standard_normal(w.size).astype(np.float16)).astype(
            np.float16
        )
        blobs.append(enc.encode({"w": w}).data)
    got = decode_chain(blobs)["w"]
    assert got.dtype == np.float16
    assert np.linalg.norm(got.astype(np.float32) - w) <= 0.05 * np.linalg.norm(w.astype(np.float32))


# -- Huffman ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "n", [0, 1, 7, huffman.BLOCK - 1, huffman.BLOCK, huffman.BLOCK + 1, 50_001]
)
@pytest.mark.parametrize("k", [1, 2, 8])
def test_huffman_round_trip(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 10 + k)
    p = np.array([0.6] + [0.4 / (k - 1)] * (k - 1)) if k > 1 else None
    symbols = rng.choice(k, size=n, p=p).astype(np.uint8)
    out = huffman.decode(huffman.encode(symbols, 8))
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)


def test_huffman_lengths_are_optimal_prefix_codes() -> None:
    counts = np.array([50, 20, 10, 10, 5, 3, 1, 1, 0])
    lengths = code_lengths = huffman.code_lengths(counts)
    assert code_lengths[-1] == 0
    assert np.sum(2.0 ** -lengths[lengths > 0]) == 1.0  # complete (Kraft equality)
    assert (lengths[:-1] >= 1).all() and lengths[0] == 1
    skewed = huffman.code_lengths(np.array([2**40] + [1] * 40))
    assert skewed.max() <= huffman.MAX_CODE_LEN


def test_huffman_is_fast_on_a_million_symbols() -> None:
    rng = np.random.default_rng(0)
    symbols = rng.choice(8, size=1_000_000, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01])
    start = time.perf_counter()
    data = huffman.encode(symbols.astype(np.uint8), 8)
    out = huffman.decode(data)
    elapsed = time.perf_counter() - start
    assert np.array_equal(out, symbols)
    assert len(data) * 8 / symbols.size < 2.3  # near the 2.1-bit entropy
    assert elapsed < 1.0, elapsed


def test_lc_encode_decode_speed_on_a_million_floats() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(1_000_000).astype(np.float32)
    enc = ChainEncoder("lc", keyframe_every=8)
    first = enc.encode({"w": w}).data
    start = time.perf_counter()
    second = enc.encode({"w": w + 0.01 * rng.standard_normal(w.size).astype(np.float32)}).data
    decode_chain([first, second])
    assert time.perf_counter() - start < 1.0


# -- compression on real training ---------------------------------------------------


def test_lossless_compresses_consecutive_training_checkpoints(capsys) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))
    enc = ChainEncoder("lossless", keyframe_every=8)
    zstd = zstandard.ZstdCompressor(level=1)
    raw = stored = zstd_raw = 0
    for _ in range(8):
        for _ in range(3):
            idx = torch.randint(0, 512, (64,))
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        tensors = take_snapshot({"model": model}, rng=False).tensors
        blob = enc.encode(tensors)
        raw += blob.raw_bytes
        stored += blob.stored_bytes
        zstd_raw += sum(len(zstd.compress(a.tobytes())) for a in tensors.values())
    ratio = raw / stored
    with capsys.disabled():
        print(f"\nlossless {ratio:.2f}x vs raw, zstd of raw bytes {raw / zstd_raw:.2f}x")
    assert ratio >= 1.3
    assert stored < zstd_raw
