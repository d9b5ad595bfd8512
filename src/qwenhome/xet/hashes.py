"""Xet hashes (specification: ``hashing``) and their string form (``api``).

Every hash is 32 bytes, kept here as ``bytes``:

- chunk hash: blake3 keyed with DATA_KEY over the chunk's bytes;
- xorb hash: the root of an aggregated tree over the (chunk hash, length)
  pairs of the xorb's chunks; each internal node hashes the text
  ``"{hash hex} : {length}\\n"`` of its children with INTERNAL_NODE_KEY;
- file hash: the same tree over all the file's chunks, its root hashed again
  with an all-zero key (the empty file's hash is all zeros);
- term verification hash: blake3 keyed with VERIFICATION_KEY over the raw
  chunk hashes of a term's chunk range, concatenated.

The tree has a variable fan-out: reading a level left to right, a group ends
after the child whose hash, read as the little-endian u64 of its last 8
bytes, is divisible by 4, or when it reaches 9 children, and never before it
has 3 children (2 when only 2 are left). The levels collapse until one node
is left. The specification defers to the reference implementation for this
grouping rule; the tests check file hashes against ``hf_xet.hash_files``.

String form: each 8-byte group of the hash, read as a little-endian u64,
printed as 16 lowercase hex digits. (``api.md``'s worked example drops the
digits ``10`` of the third group; the rule as written is what clients do.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from blake3 import blake3

from .errors import XetAnswerError

HASH_LEN = 32

DATA_KEY = bytes((
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
    157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
))
INTERNAL_NODE_KEY = bytes((
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
    93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
))
VERIFICATION_KEY = bytes((
    127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243,
    164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195,
))
ZERO_KEY = bytes(HASH_LEN)
ZERO_HASH = bytes(HASH_LEN)

# Aggregation tree: mean fan-out 4, groups of 3 to 9 children (2 when only 2 remain).
_BRANCHING = 4
_MAX_GROUP = 2 * _BRANCHING + 1

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def hash_to_hex(h: bytes) -> str:
    """The Xet string form of a 32-byte hash (each 8-byte group as a little-endian u64)."""
    if len(h) != HASH_LEN:
        raise ValueError(f"a Xet hash is {HASH_LEN} bytes, got {len(h)}")
    return "".join(h[i:i + 8][::-1].hex() for i in range(0, HASH_LEN, 8))


def hex_to_hash(text: str) -> bytes:
    """The 32 bytes of a Xet hash string; raises XetAnswerError (xet-bad-hash) if malformed."""
    if not isinstance(text, str) or not _HEX64.fullmatch(text):
        shown = repr(text)[:80]
        raise XetAnswerError(f"not a Xet hash (64 hex digits): {shown}", code="xet-bad-hash")
    raw = bytes.fromhex(text)
    return b"".join(raw[i:i + 8][::-1] for i in range(0, HASH_LEN, 8))


def is_hash_hex(text: object) -> bool:
    return isinstance(text, str) and _HEX64.fullmatch(text) is not None


def chunk_hash(data: bytes | bytearray | memoryview) -> bytes:
    return blake3(data, key=DATA_KEY).digest()


def _node_hash(children: Sequence[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{hash_to_hex(h)} : {n}\n" for h, n in children)
    return blake3(text.encode("ascii"), key=INTERNAL_NODE_KEY).digest(), sum(n for _, n in children)


def _group_end(level: Sequence[tuple[bytes, int]], start: int) -> int:
    """End (exclusive) of the group of children starting at ``start``."""
    left = len(level) - start
    if left <= 2:
        return len(level)
    end = min(start + _MAX_GROUP, len(level))
    for i in range(start + 2, end):
        if level[i][0][24] % _BRANCHING == 0:  # the last u64, little-endian, mod 4
            return i + 1
    return end


def aggregated_hash(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    """Root of the aggregation tree over (chunk hash, chunk length) pairs; all zeros if none."""
    level = list(chunks)
    if not level:
        return ZERO_HASH
    while len(level) > 1:
        nxt: list[tuple[bytes, int]] = []
        i = 0
        while i < len(level):
            j = _group_end(level, i)
            nxt.append(_node_hash(level[i:j]))
            i = j
        level = nxt
    return level[0][0]


def xorb_hash(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    """The hash of a xorb holding chunks with these (hash, length) pairs, in order."""
    return aggregated_hash(chunks)


def file_hash(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    """The Xet file hash from the file's (chunk hash, chunk length) pairs, in order."""
    pairs = list(chunks)
    if not pairs:
        return ZERO_HASH
    return blake3(aggregated_hash(pairs), key=ZERO_KEY).digest()


def verification_hash(chunk_hashes: Iterable[bytes]) -> bytes:
    """The term verification hash over the raw chunk hashes of a term's chunk range."""
    return blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()
