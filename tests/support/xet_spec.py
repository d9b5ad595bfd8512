"""The Xet specification's chunking loop, transcribed as written (``chunking``).

Pure Python, one byte at a time (about 1 MB/s): the yardstick the fast
chunker in ``qwenhome.xet.chunking`` is checked against. Nothing here is
shared with the code under test except the gear table, which is data from
the specification.
"""

from __future__ import annotations

import random

from qwenhome.xet.gear import GEAR_TABLE

MIN_CHUNK_SIZE = 8 * 1024
MAX_CHUNK_SIZE = 128 * 1024
MASK = 0xFFFF_0000_0000_0000
_U64 = (1 << 64) - 1


def spec_chunk_lengths(data: bytes, mask: int = MASK) -> list[int]:
    """Chunk lengths of ``data`` by the specification's pseudocode."""
    if len(data) < MIN_CHUNK_SIZE:
        return [len(data)] if data else []
    h = 0
    start = 0
    out: list[int] = []
    for i, b in enumerate(data):
        h = ((h << 1) + GEAR_TABLE[b]) & _U64
        size = i + 1 - start
        if size < MIN_CHUNK_SIZE:
            continue
        if size >= MAX_CHUNK_SIZE or h & mask == 0:
            out.append(size)
            start = i + 1
            h = 0
    if start < len(data):
        out.append(len(data) - start)
    return out


def periodic_pattern(*, matches: bool, seed: int) -> bytes:
    """A 64-byte pattern whose infinite repetition hits a boundary (``matches``) or never does.

    Repeated, a 64-byte pattern makes h periodic: either one phase of it has
    the top 16 bits zero (a boundary soon after every minimum size) or none
    has (every chunk is cut at the maximum size).
    """
    rng = random.Random(seed)
    while True:
        pat = rng.randbytes(64)
        h = 0
        hit = False
        for b in pat * 3:  # after 64 bytes h is periodic; test one full period after that
            h = ((h << 1) + GEAR_TABLE[b]) & _U64
        for b in pat:
            h = ((h << 1) + GEAR_TABLE[b]) & _U64
            hit = hit or h & MASK == 0
        if hit == matches:
            return pat
