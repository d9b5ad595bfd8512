"""The compression schemes of xorb chunks (specification: ``xorb``).

- 0 ``NONE``: the bytes as they are;
- 1 ``LZ4``: one LZ4 frame (the LZ4 frame format: magic, frame descriptor,
  blocks, end mark). Frames are written as the reference client writes them:
  independent blocks of at most 64 KiB, no checksums, no content size; any
  valid frame is read;
- 2 ``BG4_LZ4``: the bytes regrouped by position modulo 4 (all bytes 0, 4,
  8, ..., then 1, 5, 9, ..., then 2, ..., then 3, ...; a length that is not a
  multiple of 4 leaves the first groups one byte longer), then one LZ4 frame.
  It helps on arrays of 4-byte numbers (float32 weights).

Decompression is bounded by the length the chunk header announces, so a
hostile frame cannot make it allocate more; any failure is a XetCorruptError.
"""

from __future__ import annotations

import enum

import lz4.frame

from .errors import XetCorruptError


class Scheme(enum.IntEnum):
    NONE = 0
    LZ4 = 1
    BG4_LZ4 = 2


class Policy(enum.Enum):
    """How the builder picks a chunk's scheme. Any choice stays readable by every client."""

    NONE = "none"  # store as is (fastest to build and to serve)
    LZ4 = "lz4"  # LZ4 when it makes the chunk smaller
    AUTO = "auto"  # the smallest of LZ4 and BG4-LZ4 when smaller than the chunk


def bg4_split(data: bytes | bytearray | memoryview) -> bytes:
    # (Extended slices of bytes: as fast as numpy here, without loading it.)
    raw = bytes(data)
    return b"".join(raw[k::4] for k in range(4))


def bg4_regroup(data: bytes | bytearray | memoryview) -> bytearray:
    """The bytes of a BG4 payload back in their order (see :func:`bg4_regroup_into`)."""
    out = bytearray(len(data))
    bg4_regroup_into(data, out, 0)
    return out


def bg4_regroup_into(data: bytes | bytearray | memoryview, out: bytearray, at: int) -> None:
    """Write the bytes of a BG4 payload back in their order at ``out[at:]``:
    group ``k`` (its length ``n // 4``, one more for the first ``n % 4``)
    goes to every 4th byte from ``at + k``. Extended-slice assignment is a C
    loop as fast as numpy's strided copy and loads nothing (numpy's import
    costs a pull 0.1-0.4 s and starts OpenBLAS threads that spin); into a
    buffer the caller reuses it runs twice as fast as into a new one, whose
    pages the system must zero and map (2.0 against 1.1 GB/s here)."""
    n = len(data)
    m, r = divmod(n, 4)
    pos = 0
    for k in range(4):
        size = m + (k < r)
        out[at + k:at + n:4] = data[pos:pos + size]
        pos += size


def _lz4(data: bytes | bytearray | memoryview) -> bytes:
    out: bytes = lz4.frame.compress(
        data, block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=False,
        content_checksum=False, block_checksum=False, store_size=False)
    return out


def compress(data: bytes | bytearray | memoryview, scheme: Scheme) -> bytes:
    """The payload of a chunk stored with ``scheme`` (which may be larger than ``data``)."""
    if scheme is Scheme.NONE:
        return bytes(data)
    if scheme is Scheme.LZ4:
        return _lz4(data)
    return _lz4(bg4_split(data))


def choose_and_compress(data: bytes | bytearray | memoryview, policy: Policy) -> tuple[Scheme, bytes]:
    """The scheme and payload the builder stores for a chunk: never larger than the chunk itself."""
    best: tuple[Scheme, bytes] = (Scheme.NONE, bytes(data))
    if policy is Policy.NONE:
        return best
    tried = (Scheme.LZ4,) if policy is Policy.LZ4 else (Scheme.LZ4, Scheme.BG4_LZ4)
    for scheme in tried:
        payload = compress(data, scheme)
        if len(payload) < len(best[1]):
            best = (scheme, payload)
    return best


def lz4_decompress(payload: bytes | bytearray | memoryview, expected: int) -> bytes:
    dec = lz4.frame.LZ4FrameDecompressor()
    try:
        # One byte more than announced, to tell "too long" from "exactly right".
        out: bytes = dec.decompress(payload, max_length=expected + 1)
    except RuntimeError as exc:  # lz4 reports every malformed frame as RuntimeError
        raise XetCorruptError(f"chunk is not a valid LZ4 frame: {exc}") from exc
    if len(out) != expected:
        got = f"more than {expected}" if len(out) > expected else str(len(out))
        raise XetCorruptError(f"chunk decompresses to {got} bytes, its header says {expected}")
    if not dec.eof or dec.unused_data:
        raise XetCorruptError("chunk's LZ4 frame is truncated or followed by extra bytes")
    return out


def decompress(payload: bytes | bytearray | memoryview, scheme: int, expected: int) -> bytes | bytearray:
    """The chunk's bytes; raises XetCorruptError unless they are exactly ``expected`` long."""
    if scheme == Scheme.NONE:
        if len(payload) != expected:
            raise XetCorruptError(f"uncompressed chunk holds {len(payload)} bytes, its header says {expected}")
        return bytes(payload)
    if scheme == Scheme.LZ4:
        return lz4_decompress(payload, expected)
    if scheme == Scheme.BG4_LZ4:
        return bg4_regroup(lz4_decompress(payload, expected))
    raise XetCorruptError(f"unknown chunk compression scheme {scheme}")
