"""Content-defined chunking: the fast numpy chunker against the specification's loop."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from qwenhome.xet.chunking import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Chunker,
    chunk_lengths,
    iter_chunks,
)
from qwenhome.xet.gear import GEAR_TABLE
from tests.support.xet_spec import periodic_pattern, spec_chunk_lengths


def _lengths(ends: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise([0, *ends])]


def _fed(data: bytes, sizes: list[int], mask: int, threads: int = 1) -> list[int]:
    ends: list[int] = []
    with Chunker(mask=mask, threads=threads) as chunker:
        pos = 0
        i = 0
        while pos < len(data):
            n = sizes[i % len(sizes)]
            ends += chunker.update(data[pos:pos + n])
            pos += n
            i += 1
        ends += chunker.finish()
    return _lengths(ends)


def test_gear_table_is_the_specifications() -> None:
    assert len(GEAR_TABLE) == 256 and len(set(GEAR_TABLE)) == 256
    assert GEAR_TABLE[0] == 0xB088D3A9E840F559 and GEAR_TABLE[255] == 0x63C7A906C1DD187B
    assert all(0 <= v < 1 << 64 for v in GEAR_TABLE)


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 65536, 131072, 131073, 700_001])
def test_fast_chunker_equals_spec_loop_at_edge_sizes(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert chunk_lengths(data) == spec_chunk_lengths(data)


def test_fast_chunker_equals_spec_loop_with_dense_boundaries() -> None:
    # A mask of 4 bits makes a candidate every 16 bytes: the minimum-size rule
    # decides nearly every boundary, and resets right after one are exercised.
    rng = random.Random(7)
    for mask in (0xF000_0000_0000_0000, 0xFF00_0000_0000_0000, 0xFFF0_0000_0000_0000):
        data = rng.randbytes(rng.randint(100_000, 200_000))
        expected = spec_chunk_lengths(data, mask)
        assert _fed(data, [len(data)], mask) == expected
        assert len(expected) > 5


def test_fast_chunker_equals_spec_loop_on_zero_runs_and_periodic_data() -> None:
    rng = random.Random(8)
    never = periodic_pattern(matches=False, seed=3)
    often = periodic_pattern(matches=True, seed=4)
    data = (rng.randbytes(20_000) + bytes(300_000) + rng.randbytes(50_000)
            + never * 5000 + often * 3000 + rng.randbytes(10_000))
    expected = spec_chunk_lengths(data)
    assert chunk_lengths(data) == expected
    assert expected.count(MAX_CHUNK_SIZE) >= 4  # zeros and `never` are cut at the maximum
    assert sum(MIN_CHUNK_SIZE <= n < MIN_CHUNK_SIZE + 64 for n in expected) >= 10  # `often`


def test_boundaries_do_not_depend_on_how_the_stream_is_fed() -> None:
    rng = random.Random(9)
    data = rng.randbytes(600_000) + bytes(200_000) + rng.randbytes(123_457)
    whole = chunk_lengths(data)
    mask = 0xFFFF_0000_0000_0000
    for sizes in ([1, 63, 64, 65, 4095], [8191, 1], [MAX_CHUNK_SIZE + 1], [33_000, 70_001]):
        assert _fed(data, sizes, mask) == whole, sizes
    assert _fed(data, [300_000], mask, threads=2) == whole
    assert chunk_lengths(data, threads=2) == whole


def test_iter_chunks_yields_the_file_in_order() -> None:
    rng = random.Random(10)
    data = rng.randbytes(1_000_000) + bytes(400_000) + rng.randbytes(77)
    for block in (1000, 65_536, 300_000, 8 << 20):
        chunks = [bytes(c) for c in iter_chunks(io.BytesIO(data), block_size=block)]
        assert b"".join(chunks) == data
        assert [len(c) for c in chunks] == chunk_lengths(data)
    assert list(iter_chunks(io.BytesIO(b""))) == []


def test_boundary_mask_must_be_leading_ones() -> None:
    for bad in (0, 0x0FFF_0000_0000_0000, 0xFFFF_FFFF_FFFF_0000, 1 << 64):
        with pytest.raises(ValueError):
            Chunker(mask=bad)
