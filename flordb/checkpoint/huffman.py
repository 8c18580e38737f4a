"""Vectorised canonical Huffman coding of small-alphabet symbol streams.

The ``lc`` codec turns each delta tensor into a stream of bucket ids (at most
2^b symbols, b <= 3), which this module packs into a prefix code. Pure-Python
Huffman would spend seconds on a million symbols, so both directions are
numpy-vectorised:

* encoding expands every symbol into its code bits with one table gather and
  a boolean mask, then ``np.packbits``;
* decoding is inherently sequential (where a code starts depends on every code
  before it), so the stream is cut into blocks of up to ``BLOCK`` symbols
  whose bit lengths are stored; all blocks are then decoded in lock-step, one symbol per
  block per numpy step, with a table lookup on a precomputed window of the next
  ``maxlen`` bits at every bit position.

Stream layout (little-endian)::

    u32 n_symbols | u8 n_alphabet | u8 maxlen | u16 block (symbols per block)
    u8 code_length[n_alphabet]
    u16 block_bits[n_blocks - 1]  (bits of each block but the last)
    packed bits

A block holds at most ``BLOCK * MAX_CODE_LEN`` = 32768 bits, so u16 lengths
suffice. The block size grows with sqrt(n): a decode takes ``block`` numpy
steps, and each block costs 2 bytes.

Example:
    >>> import numpy as np
    >>> s = np.array([0, 0, 1, 2, 0, 0, 0, 3], dtype=np.uint8)
    >>> bool((decode(encode(s)) == s).all())
    True
"""

from __future__ import annotations

import heapq
import math
import struct

import numpy as np

from flordb.errors import CheckpointError

#: Most symbols per independently decodable block. Larger blocks cost fewer
#: stored lengths but more numpy steps when decoding (one per symbol of a block).
BLOCK = 2048

#: Code lengths are capped so the decode table (2^maxlen entries) stays small
#: and a block's bit length fits in a u16.
MAX_CODE_LEN = 16

_HEAD = struct.Struct("<IBBH")
_CHUNK = 1 << 16


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of each symbol given its count (0 for absent ones).

    Example:
        >>> code_lengths(np.array([5, 1, 1, 0])).tolist()
        [1, 2, 2, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(present) == 0:
        return lengths
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    weights = counts.astype(np.float64)
    while True:
        lengths[:] = 0
        # Heap of (weight, tiebreak, symbols under this node); the alphabet is
        # tiny, so merging symbol lists is cheaper than building a tree.
        heap = [(weights[s], int(s), [int(s)]) for s in present]
        heapq.heapify(heap)
        while len(heap) > 1:
            w1, t1, s1 = heapq.heappop(heap)
            w2, t2, s2 = heapq.heappop(heap)
            for s in s1:
                lengths[s] += 1
            for s in s2:
                lengths[s] += 1
            heapq.heappush(heap, (w1 + w2, min(t1, t2), s1 + s2))
        if lengths.max() <= MAX_CODE_LEN:
            return lengths
        # Too deep for the decode table: flatten the distribution and retry.
        weights[present] = np.sqrt(weights[present]) + 1.0


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values: shorter codes first, ties by symbol."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    code = 0
    prev_len = order[0][0] if order else 0
    for length, sym in order:
        code <<= length - prev_len
        codes[sym] = code
        code += 1
        prev_len = length
    return codes


def encode(symbols: np.ndarray, n_alphabet: int | None = None) -> bytes:
    """Huffman-code a 1-d array of small non-negative ints (< 256)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.uint8).ravel()
    n = len(symbols)
    if n_alphabet is None:
        n_alphabet = int(symbols.max()) + 1 if n else 1
    counts = np.bincount(symbols, minlength=n_alphabet)
    if len(counts) > n_alphabet:
        raise CheckpointError(
            f"symbol {int(symbols.max())} is outside the alphabet of {n_alphabet}"
        )
    lengths = code_lengths(counts)
    maxlen = int(lengths.max()) if n else 0
    codes = _canonical_codes(lengths)

    # Bits of each code, left-aligned in a (n_alphabet, maxlen) table; the mask
    # keeps only the first `length` of them.
    shifts = np.arange(maxlen - 1, -1, -1, dtype=np.int64)
    table = ((codes[:, None] << (maxlen - lengths)[:, None]) >> shifts[None, :]) & 1
    mask_table = np.arange(maxlen)[None, :] < lengths[:, None]
    table = table.astype(np.uint8)
    # In cache-sized chunks: the (chunk, maxlen) expansion is 16x the input.
    bits = np.concatenate(
        [np.zeros(0, dtype=np.uint8)]
        + [table[c][mask_table[c]] for c in (symbols[s : s + _CHUNK] for s in range(0, n, _CHUNK))]
    )

    block = block_size(n)
    n_blocks = (n + block - 1) // block
    block_bits = np.zeros(max(n_blocks - 1, 0), dtype="<u2")
    if n_blocks > 1:
        sym_len = lengths.astype(np.uint16)[symbols]
        block_bits[:] = np.add.reduceat(sym_len, np.arange(0, n, block), dtype=np.uint32)[:-1]
    return b"".join(
        [
            _HEAD.pack(n, n_alphabet, maxlen, block),
            lengths.astype(np.uint8).tobytes(),
            block_bits.tobytes(),
            np.packbits(bits).tobytes(),
        ]
    )


def block_size(n: int) -> int:
    """Symbols per block for a stream of ``n`` symbols.

    Example:
        >>> block_size(10), block_size(20_000), block_size(1_000_000)
        (64, 565, 2048)
    """
    return int(min(BLOCK, max(64, math.sqrt(16 * n))))


def decode(data: bytes | memoryview) -> np.ndarray:
    """Inverse of :func:`encode`; returns a uint8 array."""
    try:
        n, n_alphabet, maxlen, block = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        lengths = np.frombuffer(data, dtype=np.uint8, count=n_alphabet, offset=pos).astype(np.int64)
        pos += n_alphabet
        n_blocks = (n + block - 1) // block if block else 0
        block_bits = np.frombuffer(data, dtype="<u2", count=max(n_blocks - 1, 0), offset=pos)
        pos += 2 * len(block_bits)
        packed = np.frombuffer(data, dtype=np.uint8, offset=pos)
    except (struct.error, ValueError) as e:
        raise CheckpointError(f"corrupt Huffman stream: {e}") from e
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    present = np.flatnonzero(lengths)
    if len(present) == 1:
        # A one-symbol stream has one 1-bit code per symbol; no need to read it.
        return np.full(n, present[0], dtype=np.uint8)

    codes = _canonical_codes(lengths)
    # Decode table over every maxlen-bit window: the symbol whose code is a
    # prefix of the window, and that code's length.
    table_sym = np.zeros(1 << maxlen, dtype=np.uint8)
    table_len = np.zeros(1 << maxlen, dtype=np.int64)
    for s in present:
        lo = int(codes[s]) << (maxlen - int(lengths[s]))
        hi = lo + (1 << (maxlen - int(lengths[s])))
        table_sym[lo:hi] = s
        table_len[lo:hi] = lengths[s]

    # The 24 bits starting at every byte: any code (<= 16 bits, starting at
    # any of the byte's 8 bit offsets) lies within them.
    padded = np.concatenate([packed, np.zeros(3, dtype=np.uint8)]).astype(np.int64)
    w24 = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]
    total = 8 * len(packed)
    mask = (1 << maxlen) - 1

    # Row i holds symbol i of every block, so each step writes contiguously.
    out = np.empty((block, n_blocks), dtype=np.uint8)
    cursor = np.zeros(n_blocks, dtype=np.int64)
    np.cumsum(block_bits, out=cursor[1:])
    for i in range(block):
        w = (w24[cursor >> 3] >> (24 - maxlen - (cursor & 7))) & mask
        out[i] = table_sym[w]
        cursor += table_len[w]
        # The last block may be short; clamping keeps its extra (discarded)
        # steps inside the stream.
        np.minimum(cursor, total, out=cursor)
    return out.T.ravel()[:n]
