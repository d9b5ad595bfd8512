"""The xorb format (specification: ``xorb``): chunks, each an 8-byte header and its payload.

Header, 8 bytes::

    version (1 byte, 0) | payload length (u24 LE) | scheme (1 byte) | chunk length (u24 LE)

A xorb is at most 64 MiB serialized; the reference client also stops at 8192
chunks (specification: ``deduplication``). The specification defines no
footer: the reference client appends one on upload (chunk boundaries and
hashes, starting with the bytes ``XETBLOB``), which readers of chunk ranges
never reach. What a server needs to answer byte ranges (where each chunk
lies) is kept here in :class:`XorbInfo`, beside the xorb.

:func:`iter_chunks` walks a byte range of a serialized xorb that starts at a
chunk header and checks everything it reads: header fields, bounds, the
decompressed length, and optionally the chunk hashes. Any failure raises
XetCorruptError (``xet-corrupt``).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .compression import Policy, Scheme, choose_and_compress, decompress
from .errors import XetAnswerError, XetCorruptError
from .hashes import chunk_hash, hash_to_hex, hex_to_hash, xorb_hash
from .limits import MAX_CHUNK_SIZE

HEADER_LEN = 8
CHUNK_VERSION = 0
MAX_XORB_BYTES = 64 * 1024 * 1024
MAX_XORB_CHUNKS = 8 * 1024
FOOTER_MAGIC = b"XETBLOB"
_U24_MAX = (1 << 24) - 1
_SCHEMES = frozenset(Scheme)  # (a header per chunk: no enum walk each time)
_WORDS = struct.Struct("<II")  # a header as two words: version | payload length << 8, scheme | length << 8


@dataclass(frozen=True)
class ChunkHeader:
    version: int
    payload_length: int  # bytes of the (compressed) payload after the header
    scheme: int
    length: int  # bytes of the chunk once decompressed

    def pack(self) -> bytes:
        if not (0 <= self.payload_length <= _U24_MAX and 0 <= self.length <= _U24_MAX):
            raise ValueError("chunk lengths must fit in 24 bits")
        return (bytes((self.version,)) + self.payload_length.to_bytes(3, "little")
                + bytes((self.scheme,)) + self.length.to_bytes(3, "little"))

    @classmethod
    def unpack(cls, raw: bytes | bytearray | memoryview) -> ChunkHeader:
        """Parse and check a header; raises XetCorruptError if it cannot be a valid one."""
        if len(raw) < HEADER_LEN:
            raise XetCorruptError(f"xorb range ends inside a chunk header ({len(raw)} of {HEADER_LEN} bytes)")
        version, p0, p1, p2, scheme, u0, u1, u2 = struct.unpack_from("8B", raw)
        head = cls(version, p0 | p1 << 8 | p2 << 16, scheme, u0 | u1 << 8 | u2 << 16)
        if version != CHUNK_VERSION:
            raise XetCorruptError(f"chunk header version {version}, expected {CHUNK_VERSION}")
        if scheme not in _SCHEMES:
            raise XetCorruptError(f"unknown chunk compression scheme {scheme}")
        if not 0 < head.length <= MAX_CHUNK_SIZE:
            raise XetCorruptError(f"chunk length {head.length} outside 1..{MAX_CHUNK_SIZE}")
        if head.payload_length == 0 or (scheme == Scheme.NONE and head.payload_length != head.length):
            raise XetCorruptError(f"chunk payload length {head.payload_length} does not fit its "
                                  f"length {head.length} (scheme {scheme})")
        return head


def header_at(buf: bytes | bytearray | memoryview, off: int) -> tuple[int, int, int]:
    """The header at ``buf[off:]`` as (payload length, scheme, length), checked
    as :meth:`ChunkHeader.unpack` checks it (which says what is wrong): the
    decoder's path, a call per chunk without building an object."""
    w0, w1 = _WORDS.unpack_from(buf, off)
    payload, scheme, length = w0 >> 8, w1 & 0xFF, w1 >> 8
    if (w0 & 0xFF != CHUNK_VERSION or scheme not in _SCHEMES or not 0 < length <= MAX_CHUNK_SIZE
            or payload == 0 or (scheme == Scheme.NONE and payload != length)):
        ChunkHeader.unpack(memoryview(buf)[off:off + HEADER_LEN])
    return payload, scheme, length


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk ready to be packed: its hash, its length, and its serialized bytes (header + payload)."""

    hash: bytes
    length: int
    blob: bytes


def encode_chunk(data: bytes | bytearray | memoryview, policy: Policy = Policy.LZ4,
                 digest: bytes | None = None) -> EncodedChunk:
    if not 0 < len(data) <= MAX_CHUNK_SIZE:
        raise ValueError(f"a chunk holds 1 to {MAX_CHUNK_SIZE} bytes, got {len(data)}")
    scheme, payload = choose_and_compress(data, policy)
    head = ChunkHeader(CHUNK_VERSION, len(payload), int(scheme), len(data)).pack()
    return EncodedChunk(digest if digest is not None else chunk_hash(data), len(data), head + payload)


@dataclass(frozen=True)
class XorbInfo:
    """A xorb's hash and, per chunk, its hash, its length and where it lies in the serialized xorb.

    Chunk ``i`` occupies bytes ``[offsets[i], offsets[i + 1])`` of the xorb.
    """

    hash: bytes
    chunk_hashes: tuple[bytes, ...]
    chunk_lengths: tuple[int, ...]
    offsets: tuple[int, ...] = field(repr=False)

    @property
    def hex(self) -> str:
        return hash_to_hex(self.hash)

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_lengths)

    @property
    def size(self) -> int:
        """Bytes of the serialized xorb."""
        return self.offsets[-1]

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """The HTTP byte range (first, last inclusive) holding chunks ``[start, end)``."""
        if not 0 <= start < end <= self.num_chunks:
            raise ValueError(f"chunk range [{start}, {end}) outside the xorb's {self.num_chunks} chunks")
        return self.offsets[start], self.offsets[end] - 1

    def unpacked_length(self, start: int, end: int) -> int:
        return sum(self.chunk_lengths[start:end])

    def to_json(self) -> dict[str, Any]:
        rows = zip(self.chunk_hashes, self.chunk_lengths, self.offsets[:-1], strict=True)
        return {"hash": self.hex, "size": self.size,
                "chunks": [[hash_to_hex(h), n, o] for h, n, o in rows]}

    @classmethod
    def from_json(cls, obj: Any) -> XorbInfo:
        """Parse what :meth:`to_json` wrote; raises XetAnswerError (xet-bad-recipe) if malformed."""
        try:
            digest = hex_to_hash(obj["hash"])
            rows = obj["chunks"]
            hashes = tuple(hex_to_hash(r[0]) for r in rows)
            lengths = tuple(int(r[1]) for r in rows)
            offsets = (*(int(r[2]) for r in rows), int(obj["size"]))
        except (KeyError, TypeError, IndexError, ValueError, XetAnswerError) as exc:
            raise XetAnswerError(f"invalid xorb index: {exc}", code="xet-bad-recipe") from exc
        if (not hashes or offsets[0] != 0
                or any(b - a <= HEADER_LEN for a, b in itertools.pairwise(offsets))
                or not all(0 < n <= MAX_CHUNK_SIZE for n in lengths)):
            raise XetAnswerError("invalid xorb index: no chunks, or offsets or lengths out of bounds",
                                 code="xet-bad-recipe")
        return cls(digest, hashes, lengths, offsets)


@dataclass(frozen=True)
class Xorb:
    info: XorbInfo
    data: bytes


class XorbBuilder:
    """Packs encoded chunks into one xorb, within the size and chunk-count limits.

    With ``keep_data=False`` only the layout is kept (the finished xorb's
    ``data`` is empty): for a server that synthesizes the bytes from the file.
    """

    def __init__(self, *, max_bytes: int = MAX_XORB_BYTES, max_chunks: int = MAX_XORB_CHUNKS,
                 keep_data: bool = True) -> None:
        self.max_bytes = max_bytes
        self.max_chunks = max_chunks
        self.keep_data = keep_data
        self._parts: list[bytes] = []
        self._hashes: list[bytes] = []
        self._lengths: list[int] = []
        self._offsets: list[int] = [0]

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def size(self) -> int:
        return self._offsets[-1]

    def fits(self, chunk: EncodedChunk) -> bool:
        return len(self._hashes) < self.max_chunks and self.size + len(chunk.blob) <= self.max_bytes

    def add(self, chunk: EncodedChunk) -> int:
        """Append a chunk; returns its index in the xorb. Check :meth:`fits` first."""
        if not self.fits(chunk):
            raise ValueError("chunk does not fit in this xorb")
        if self.keep_data:
            self._parts.append(chunk.blob)
        self._hashes.append(chunk.hash)
        self._lengths.append(chunk.length)
        self._offsets.append(self.size + len(chunk.blob))
        return len(self._hashes) - 1

    def finish(self) -> Xorb:
        if not self._hashes:
            raise ValueError("an empty xorb has no hash")
        digest = xorb_hash(zip(self._hashes, self._lengths, strict=True))
        info = XorbInfo(digest, tuple(self._hashes), tuple(self._lengths), tuple(self._offsets))
        return Xorb(info, b"".join(self._parts))


def read_headers(buf: bytes | memoryview) -> list[ChunkHeader]:
    """The headers of every chunk of a whole serialized xorb (stops at a reference-client footer)."""
    view = memoryview(buf)
    out: list[ChunkHeader] = []
    pos = 0
    while pos < len(view):
        if bytes(view[pos:pos + len(FOOTER_MAGIC)]) == FOOTER_MAGIC:
            break
        head = ChunkHeader.unpack(view[pos:pos + HEADER_LEN])
        pos += HEADER_LEN + head.payload_length
        if pos > len(view):
            raise XetCorruptError(f"chunk {len(out)} runs past the end of the xorb")
        out.append(head)
    return out


@dataclass(frozen=True)
class DecodedChunk:
    index: int  # the chunk's index in its xorb
    data: bytes | bytearray  # decompressed; len(data) is the chunk's length


def iter_chunks(buf: bytes | bytearray | memoryview, *, first_index: int = 0, count: int | None = None,
                expected_hashes: Sequence[bytes] | None = None) -> Iterator[DecodedChunk]:
    """Decode the chunks of a byte range of a xorb that starts at a chunk header.

    With ``count``, the range must hold exactly that many chunks and nothing
    more. With ``expected_hashes`` (one per chunk, from the range's first
    chunk), each decompressed chunk is checked against its hash, which
    detects any corrupted byte; without them, a corrupted header or LZ4 frame
    is detected, and a corrupted byte of an uncompressed payload is left to the
    caller's file hash. Raises XetCorruptError.
    """
    view = memoryview(buf)
    if expected_hashes is not None and count is None:
        count = len(expected_hashes)
    pos = 0
    n = 0
    while pos < len(view) and (count is None or n < count):
        head = ChunkHeader.unpack(view[pos:pos + HEADER_LEN])
        start = pos + HEADER_LEN
        end = start + head.payload_length
        if end > len(view):
            raise XetCorruptError(f"chunk {first_index + n} runs past the end of the range "
                                  f"({end - len(view)} bytes missing)")
        data = decompress(view[start:end], head.scheme, head.length)
        if expected_hashes is not None and chunk_hash(data) != expected_hashes[n]:
            raise XetCorruptError(f"chunk {first_index + n} does not match its hash")
        yield DecodedChunk(first_index + n, data)
        pos = end
        n += 1
    if count is not None and n < count:
        raise XetCorruptError(f"xorb range holds {n} chunks, expected {count}")
    if pos != len(view):
        raise XetCorruptError(f"xorb range has {len(view) - pos} bytes after its last chunk")
