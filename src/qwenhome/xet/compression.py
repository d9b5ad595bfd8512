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

import lz4.block
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


_FRAME_MAGIC = b"\x04\x22\x4d\x18"
_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}  # by bits 4-6 of the descriptor's BD byte
_INDEPENDENT, _BLOCK_CHECKSUM, _CONTENT_SIZE, _CONTENT_CHECKSUM, _DICT_ID = 0x20, 0x10, 0x08, 0x04, 0x01


def _frame_blocks(payload: bytes | bytearray | memoryview, expected: int) -> bytes | None:
    """The frame's content, its blocks read one by one with ``lz4.block``:
    a chunk's frame is one block, and this skips the decompression context
    the frame reader sets up for each (16% of a chunk's LZ4 time). None for a
    frame left to the frame reader: linked blocks, a dictionary, a version
    or block size it does not know. Checksums are not checked (the reference
    client writes none, and the file's sha256 is); every length is, against
    the chunk header's."""
    view = memoryview(payload)
    n = len(view)
    if n < 7 or view[:4] != _FRAME_MAGIC:
        return None
    flg, bd = view[4], view[5]
    if flg >> 6 != 1 or not flg & _INDEPENDENT or flg & (_DICT_ID | 0x02) or bd & 0x8F or bd >> 4 not in _BLOCK_MAX:
        return None
    limit = _BLOCK_MAX[bd >> 4]
    pos = 7 + (8 if flg & _CONTENT_SIZE else 0)  # (magic, FLG, BD, the content size, the header checksum)
    trailer = 4 if flg & _BLOCK_CHECKSUM else 0
    parts: list[bytes] = []
    got = 0
    while True:
        if pos + 4 > n:
            raise XetCorruptError("chunk's LZ4 frame is truncated")
        word = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if word == 0:  # the end mark
            break
        size = word & 0x7FFFFFFF
        if size > limit or pos + size + trailer > n:
            raise XetCorruptError("chunk's LZ4 frame holds a block longer than it allows, or is truncated")
        block = view[pos:pos + size]
        pos += size + trailer
        if word & 0x80000000:  # a block stored as it is
            part = bytes(block)
        elif got >= expected:
            raise XetCorruptError(f"chunk decompresses to more than {expected} bytes, its header says {expected}")
        else:
            try:  # (bounded: never more than the header's length)
                part = lz4.block.decompress(block, uncompressed_size=min(limit, expected - got))
            except lz4.block.LZ4BlockError as exc:  # corrupt, or longer than that
                raise XetCorruptError(f"chunk is not a valid LZ4 frame: {exc}") from exc
        got += len(part)
        parts.append(part)
    if pos + (4 if flg & _CONTENT_CHECKSUM else 0) != n:
        raise XetCorruptError("chunk's LZ4 frame is truncated or followed by extra bytes")
    if got != expected:
        raise XetCorruptError(f"chunk decompresses to {got} bytes, its header says {expected}")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def lz4_decompress(payload: bytes | bytearray | memoryview, expected: int) -> bytes:
    """A chunk's LZ4 frame, decompressed to exactly ``expected`` bytes (else XetCorruptError)."""
    fast = _frame_blocks(payload, expected)
    if fast is not None:
        return fast
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
