"""Content-defined chunking exactly as the Xet specification (``chunking``) defines it.

The specification's loop, per byte ``b``::

    h = (h << 1) + GEAR[b]            # 64-bit wrapping
    size = bytes since the chunk start
    boundary if size >= MAX, or size >= MIN and h & MASK == 0; h = 0 at each boundary

A Python loop over every byte runs at about 1 MB/s. This module computes the
same boundaries in bulk with numpy: because of the shift, ``h`` at a position
depends only on the last 64 bytes, ``h_i = sum_{j<64} GEAR[x_{i-j}] << j``
(mod 2^64), whatever happened before. The reset at a boundary changes ``h``
only for the next 63 bytes, which are inside the minimum size where no
boundary may be taken; so ``h`` can be computed for every position of a block
independently of where the boundaries fall. It is built by doubling
(``H_2k[i] = H_k[i] + (H_k[i-k] << k)``), and the few positions whose top 16
bits are zero (one in 65536 on random data) are the candidates. The minimum
and maximum size rules are then applied sequentially over the candidates,
which is cheap. The result is identical to the specification's loop (the tests
cross-check it on random data against a transcription of the loop).

Memory is bounded: a file is read in blocks, hashed in pieces that stay in the
CPU cache, and only the current unfinished chunk is carried over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from .gear import GEAR_TABLE
from .limits import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TARGET_CHUNK_SIZE

__all__ = ["MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "TARGET_CHUNK_SIZE", "Chunker", "chunk_lengths", "iter_chunks",
           "iter_sized"]
# 16 one-bits at the top: a boundary every 2^16 bytes on average, after the minimum.
BOUNDARY_MASK = 0xFFFF_0000_0000_0000
WINDOW = 64  # bytes that influence h at any position

# Bytes hashed per numpy pass: two uint64 arrays of this length stay in the L2 cache.
_PIECE = 32 * 1024
# Bytes read from a file at a time by iter_chunks.
READ_BLOCK = 8 * 1024 * 1024

_GEAR = np.array(GEAR_TABLE, dtype=np.uint64)

U8Array = npt.NDArray[np.uint8]


def _mask_bits(mask: int) -> int:
    """Number of leading one-bits of a boundary mask of the form 1...10...0 (at most 32)."""
    bits = 64 - (mask & -mask).bit_length() + 1
    if mask <= 0 or mask >= 1 << 64 or mask != ((1 << bits) - 1) << (64 - bits) or bits > 32:
        raise ValueError(f"boundary mask must be 1 to 32 leading one-bits, got {mask:#x}")
    return bits


def _piece_candidates(x: U8Array, first: int, top_limit: int,
                      g: npt.NDArray[np.uint64], t: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
    """Indices ``i >= first`` of ``x`` where the gear hash over ``x[..i]`` has its masked top bits zero.

    ``x[:first]`` is context only (at most WINDOW - 1 bytes). Positions closer
    than WINDOW - 1 to the start of ``x`` are hashed as if the bytes before were
    absent, which is exact at the start of a file (where h starts at 0).
    """
    n = len(x)
    h = g[:n]
    np.take(_GEAR, x, out=h, mode="clip")  # bytes are always valid indices; 'clip' skips a buffered copy
    k = 1
    while k < 32 and k < n:  # H_1 -> H_32 by doubling, in place
        np.left_shift(h[: n - k], k, out=t[: n - k])
        np.add(h[k:], t[: n - k], out=h[k:])
        k *= 2
    # The last doubling adds H_32[i-32] << 32, whose low half is zero: the top
    # 32 bits of H_64[i] are top32(H_32[i]) + low32(H_32[i-32]), exactly, in
    # 32-bit arithmetic on views of the same memory (little-endian halves).
    halves = h.view(np.uint32)
    low, high = halves[0::2], halves[1::2]
    top = t.view(np.uint32)[:n]
    head = min(32, n)
    top[:head] = high[:head]
    if n > 32:
        np.add(high[32:], low[: n - 32], out=top[32:n])
    found = np.flatnonzero(top < top_limit)
    return found[found >= first]


def boundary_candidates(history: U8Array, block: U8Array, *, mask: int = BOUNDARY_MASK,
                        pool: ThreadPoolExecutor | None = None, workers: int = 1) -> npt.NDArray[np.int64]:
    """Positions ``p`` in ``block`` (0-based) where ``h & mask == 0`` after hashing ``block[p]``.

    ``history`` holds the bytes just before ``block`` (its last WINDOW - 1
    bytes are used; empty at the start of a file). With ``pool``, the block is
    hashed by ``workers`` threads (numpy releases the GIL in its loops).
    """
    top_limit = 1 << (32 - _mask_bits(mask))
    history = history[-(WINDOW - 1):] if len(history) else history
    n = len(block)
    if n == 0:
        return np.empty(0, dtype=np.int64)

    def scan(lo: int, hi: int) -> list[npt.NDArray[np.int64]]:
        g = np.empty(_PIECE + WINDOW, dtype=np.uint64)
        t = np.empty(_PIECE + WINDOW, dtype=np.uint64)
        out: list[npt.NDArray[np.int64]] = []
        for s in range(lo, hi, _PIECE):
            e = min(s + _PIECE, hi)
            if s:  # pieces start at multiples of _PIECE > WINDOW: the context is in the block
                ctx = WINDOW - 1
                x = block[s - ctx:e]
            else:
                ctx = len(history)
                x = np.concatenate((history, block[:e])) if ctx else block[:e]
            found = _piece_candidates(x, ctx, top_limit, g, t)
            if len(found):
                out.append(found.astype(np.int64) + (s - ctx))
        return out

    if pool is None or workers <= 1 or n < 2 * _PIECE:
        parts = scan(0, n)
    else:
        step = -(-n // workers // _PIECE) * _PIECE
        futures = [pool.submit(scan, lo, min(lo + step, n)) for lo in range(0, n, step)]
        parts = [a for f in futures for a in f.result()]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class Chunker:
    """Streaming chunker: feed bytes in pieces of any size, get the chunk boundaries.

    ``update`` returns the end offsets (absolute, from the start of the stream)
    of the chunks completed by the new bytes; ``finish`` returns the end of the
    last chunk, if any bytes are left. The boundaries do not depend on how the
    stream is cut into pieces.
    """

    def __init__(self, *, threads: int = 1, mask: int = BOUNDARY_MASK) -> None:
        self._mask = mask
        _mask_bits(mask)
        self._workers = max(1, threads)
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._history: U8Array = np.empty(0, dtype=np.uint8)
        self._start = 0  # absolute offset where the current chunk starts
        self._end = 0  # absolute offset of the end of the bytes fed so far

    def update(self, data: bytes | bytearray | memoryview) -> list[int]:
        block = np.frombuffer(data, dtype=np.uint8)
        base = self._end
        self._end += len(block)
        found = boundary_candidates(self._history, block, mask=self._mask, pool=self._pool,
                                    workers=self._workers)
        if len(block) >= WINDOW - 1:
            self._history = block[-(WINDOW - 1):].copy()
        else:
            self._history = np.concatenate((self._history, block))[-(WINDOW - 1):]
        ends: list[int] = []
        start = self._start
        for p in found.tolist():
            end = base + p + 1
            while end - start > MAX_CHUNK_SIZE:
                start += MAX_CHUNK_SIZE
                ends.append(start)
            if end - start >= MIN_CHUNK_SIZE:
                ends.append(end)
                start = end
        while self._end - start >= MAX_CHUNK_SIZE:
            start += MAX_CHUNK_SIZE
            ends.append(start)
        self._start = start
        return ends

    def finish(self) -> list[int]:
        """The end of the last (short) chunk, if bytes remain; the chunker can then be reused."""
        last = [self._end] if self._end > self._start else []
        self._start = self._end = 0
        self._history = np.empty(0, dtype=np.uint8)
        return last

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __enter__(self) -> Chunker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunk_lengths(data: bytes | bytearray | memoryview, *, threads: int = 1) -> list[int]:
    """The lengths of the chunks of ``data`` (in memory), in order."""
    with Chunker(threads=threads) as chunker:
        ends = chunker.update(data) + chunker.finish()
    return [b - a for a, b in itertools.pairwise([0, *ends])]


def iter_chunks(stream: BinaryIO | Callable[[int], bytes], *, threads: int = 1,
                block_size: int = READ_BLOCK) -> Iterator[bytes | memoryview]:
    """Read ``stream`` to its end and yield its chunks' bytes, in order.

    ``stream`` is a binary file (or a ``read(n)`` function). Chunks are yielded
    as views into the block read (valid as long as the caller keeps them) or as
    bytes where a chunk spans two blocks. At most one block plus one chunk is
    held in memory.
    """
    read = stream if callable(stream) else stream.read
    carry = b""  # bytes of the unfinished chunk, from earlier blocks
    fed = 0  # bytes read so far
    with Chunker(threads=threads) as chunker:
        while True:
            block = read(block_size)
            if not block:
                break
            view = memoryview(block)
            block_start = fed
            fed += len(block)
            pos = 0  # position in view up to which bytes have been yielded
            for end in chunker.update(block):
                cut = end - block_start
                if carry:
                    yield carry + view[pos:cut]
                    carry = b""
                else:
                    yield view[pos:cut]
                pos = cut
            carry = (carry + view[pos:]) if carry else bytes(view[pos:])
        if chunker.finish() and carry:
            yield carry


def iter_sized(stream: BinaryIO | Callable[[int], bytes], lengths: Sequence[int], *,
               block_size: int = READ_BLOCK) -> Iterator[bytes | memoryview]:
    """Read ``stream`` to its end and yield chunks of the given ``lengths``
    (boundaries already known: no chunking), as :func:`iter_chunks` yields them.
    Raises ValueError when the stream is shorter or longer than the lengths add up to."""
    read = stream if callable(stream) else stream.read
    carry = b""
    k = 0
    while True:
        block = read(block_size)
        if not block:
            break
        view = memoryview(block)
        pos = 0
        while k < len(lengths):
            need = lengths[k] - len(carry)
            if pos + need > len(view):
                break
            yield carry + view[pos:pos + need] if carry else view[pos:pos + need]
            carry = b""
            pos += need
            k += 1
        rest = view[pos:]
        if k == len(lengths) and rest:
            raise ValueError("the file is longer than its chunk lengths add up to")
        carry = carry + rest if carry else bytes(rest)
    if k != len(lengths) or carry:
        raise ValueError("the file is shorter than its chunk lengths add up to")
