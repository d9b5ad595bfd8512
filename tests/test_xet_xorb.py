"""The xorb format: chunk headers, the three compression schemes, packing limits, and corruption."""

from __future__ import annotations

import random

import lz4.frame
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenhome.errors import IntegrityError
from qwenhome.xet.chunking import MAX_CHUNK_SIZE
from qwenhome.xet.compression import Policy, Scheme, bg4_regroup, bg4_split, compress, decompress
from qwenhome.xet.errors import XetAnswerError, XetCorruptError
from qwenhome.xet.hashes import chunk_hash, xorb_hash
from qwenhome.xet.xorb import (
    HEADER_LEN,
    MAX_XORB_CHUNKS,
    ChunkHeader,
    XorbBuilder,
    XorbInfo,
    encode_chunk,
    iter_chunks,
    read_headers,
)


def _floats(n: int, seed: int) -> bytes:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32).tobytes()


def _samples() -> dict[str, bytes]:
    rng = random.Random(3)
    return {"random": rng.randbytes(70_000), "zeros": bytes(MAX_CHUNK_SIZE), "floats": _floats(16_000, 1),
            "text": b"the quick brown fox " * 3000, "one": b"x", "five": b"abcde"}


@pytest.mark.parametrize("scheme", list(Scheme))
def test_each_scheme_round_trips(scheme: Scheme) -> None:
    for name, data in _samples().items():
        payload = compress(data, scheme)
        assert decompress(payload, scheme, len(data)) == data, name


def test_lz4_payload_is_a_standard_lz4_frame() -> None:
    data = b"the quick brown fox " * 3000
    payload = compress(data, Scheme.LZ4)
    assert payload[:4] == b"\x04\x22\x4d\x18"  # the LZ4 frame magic number
    assert lz4.frame.decompress(payload) == data  # any LZ4 frame reader reads it
    grouped = compress(data, Scheme.BG4_LZ4)
    assert lz4.frame.decompress(grouped) == bg4_split(data)


def test_byte_grouping_follows_the_spec_layout() -> None:
    # Groups of bytes 0,4,8.. then 1,5,9.. then 2,6.. then 3,7..; leftovers go to the first groups.
    assert bg4_split(bytes(range(10))) == bytes([0, 4, 8, 1, 5, 9, 2, 6, 3, 7])
    for n in range(0, 13):
        data = bytes(range(100, 100 + n))
        assert bg4_regroup(bg4_split(data)) == data


def test_bg4_helps_on_float_weights() -> None:
    data = _floats(30_000, 2)
    assert len(compress(data, Scheme.BG4_LZ4)) < 0.95 * len(compress(data, Scheme.LZ4))
    chunk = encode_chunk(data, Policy.AUTO)
    assert ChunkHeader.unpack(chunk.blob[:HEADER_LEN]).scheme == Scheme.BG4_LZ4


def test_chunk_header_layout() -> None:
    head = ChunkHeader(0, 0x012345, 1, 0x020000).pack()
    assert head == bytes([0, 0x45, 0x23, 0x01, 1, 0x00, 0x00, 0x02])
    assert ChunkHeader.unpack(head) == ChunkHeader(0, 0x012345, 1, 0x020000)


def test_incompressible_chunks_are_stored_as_they_are() -> None:
    data = random.Random(4).randbytes(50_000)
    chunk = encode_chunk(data, Policy.AUTO)
    assert ChunkHeader.unpack(chunk.blob[:HEADER_LEN]) == ChunkHeader(0, 50_000, 0, 50_000)
    assert chunk.blob[HEADER_LEN:] == data and chunk.hash == chunk_hash(data)


def _xorb(policy: Policy = Policy.AUTO) -> tuple[list[bytes], bytes, XorbInfo]:
    chunks = list(_samples().values())
    builder = XorbBuilder()
    for data in chunks:
        builder.add(encode_chunk(data, policy))
    xorb = builder.finish()
    return chunks, xorb.data, xorb.info


def test_xorb_decodes_whole_and_by_chunk_range() -> None:
    chunks, data, info = _xorb()
    assert {h.scheme for h in read_headers(data)} == {0, 1, 2}
    assert [c.data for c in iter_chunks(data)] == chunks
    assert info.hash == xorb_hash((chunk_hash(c), len(c)) for c in chunks)
    assert info.size == len(data) and info.chunk_lengths == tuple(len(c) for c in chunks)
    first, last = info.byte_range(2, 5)
    got = list(iter_chunks(data[first:last + 1], first_index=2, count=3, expected_hashes=info.chunk_hashes[2:5]))
    assert [c.index for c in got] == [2, 3, 4] and [c.data for c in got] == chunks[2:5]
    assert XorbInfo.from_json(info.to_json()) == info


def test_every_corrupted_byte_is_detected_against_the_chunk_hashes() -> None:
    _, data, info = _xorb()
    for pos in range(0, len(data), max(1, len(data) // 3000)):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        with pytest.raises(XetCorruptError) as caught:
            list(iter_chunks(bytes(bad), expected_hashes=info.chunk_hashes))
        assert caught.value.code == "xet-corrupt" and isinstance(caught.value, IntegrityError)


def test_every_corrupted_header_byte_is_detected_without_hashes() -> None:
    _, data, info = _xorb(Policy.LZ4)
    for start in info.offsets[:-1]:
        for pos in range(start, start + HEADER_LEN):
            for flip in (0x01, 0x80):
                bad = bytearray(data)
                bad[pos] ^= flip
                with pytest.raises(XetCorruptError):
                    list(iter_chunks(bytes(bad), count=info.num_chunks))


def test_truncated_or_padded_ranges_are_detected() -> None:
    _, data, info = _xorb()
    for cut in (1, 7, 8, 9, len(data) - 1):
        with pytest.raises(XetCorruptError):
            list(iter_chunks(data[:cut], count=info.num_chunks))
    with pytest.raises(XetCorruptError):
        list(iter_chunks(data + b"\0", count=info.num_chunks))
    with pytest.raises(XetCorruptError):  # a range that holds fewer chunks than asked
        list(iter_chunks(data[: info.offsets[2]], count=3))


def test_hostile_headers_are_refused_before_decompressing() -> None:
    bomb = lz4.frame.compress(bytes(50_000_000))
    frame = compress(b"abc" * 10_000, Scheme.LZ4)
    for head, payload in [
        (ChunkHeader(0, len(bomb), 1, 1000), bomb),  # decompresses to more than announced
        (ChunkHeader(0, 10, 1, MAX_CHUNK_SIZE + 1), b"x" * 10),  # longer than a chunk can be
        (ChunkHeader(1, 5, 0, 5), b"hello"),  # unknown version
        (ChunkHeader(0, 5, 3, 5), b"hello"),  # unknown scheme
        (ChunkHeader(0, 5, 0, 6), b"hello"),  # stored as is, but lengths differ
        (ChunkHeader(0, 9, 0, 9), b"hello"),  # runs past the end of the range
        (ChunkHeader(0, len(frame) + 3, 1, 30_000), frame + b"xyz"),  # bytes after the frame's end mark
        (ChunkHeader(0, len(frame) - 4, 1, 30_000), frame[:-4]),  # all the data, but no end mark
    ]:
        with pytest.raises(XetCorruptError):
            list(iter_chunks(head.pack() + payload))


def test_builder_keeps_within_the_size_and_chunk_limits() -> None:
    small = encode_chunk(b"a", Policy.NONE)
    builder = XorbBuilder()
    for _ in range(MAX_XORB_CHUNKS):
        builder.add(small)
    assert not builder.fits(small)
    with pytest.raises(ValueError):
        builder.add(small)
    sized = XorbBuilder(max_bytes=3 * (HEADER_LEN + 100))
    chunk = encode_chunk(random.Random(5).randbytes(100), Policy.NONE)
    for _ in range(3):
        sized.add(chunk)
    assert not sized.fits(chunk) and sized.finish().info.size == 3 * (HEADER_LEN + 100)


def test_xorb_index_json_rejects_garbage_with_a_code() -> None:
    _, _, info = _xorb()
    good = info.to_json()
    for bad in [None, {}, {**good, "hash": "zz"}, {**good, "chunks": []}, {**good, "chunks": [[1, 2]]},
                {**good, "chunks": list(reversed(good["chunks"]))}]:
        with pytest.raises(XetAnswerError) as caught:
            XorbInfo.from_json(bad)
        assert caught.value.code == "xet-bad-recipe"


_FRAMES = {  # frames another writer may send: every option of the LZ4 frame format
    "plain": {},
    "checksums": {"block_checksum": True, "content_checksum": True},
    "content size": {"store_size": True},
    "linked blocks": {"block_linked": True},
    "256 KiB blocks": {"block_size": lz4.frame.BLOCKSIZE_MAX256KB},
}


@pytest.mark.parametrize("options", list(_FRAMES.values()), ids=list(_FRAMES))
def test_any_lz4_frame_decodes_as_the_frame_reader_does(options: dict[str, object]) -> None:
    """Chunks are read a block at a time (faster than the frame reader on
    64 KiB chunks); any frame decodes the same, over several blocks too,
    with raw (incompressible) blocks among compressed ones."""
    kw: dict[str, object] = {"block_size": lz4.frame.BLOCKSIZE_MAX64KB, "store_size": False, **options}
    data = _floats(40_000, 5) + random.Random(6).randbytes(70_000) + bytes(20_000)  # 3+ blocks of 64 KiB
    for scheme, body in ((Scheme.LZ4, data), (Scheme.BG4_LZ4, bg4_split(data))):
        payload = lz4.frame.compress(body, **kw)  # type: ignore[arg-type]
        assert decompress(payload, scheme, len(data)) == data


def test_a_truncated_or_padded_lz4_frame_is_corrupt_never_a_traceback() -> None:
    data = _floats(40_000, 7)
    payload = compress(data, Scheme.LZ4)
    for cut in range(0, len(payload)):
        with pytest.raises(XetCorruptError):
            decompress(payload[:cut], Scheme.LZ4, len(data))
    with pytest.raises(XetCorruptError):
        decompress(payload + b"\0", Scheme.LZ4, len(data))
    for wrong in (len(data) - 1, len(data) + 1, 1):  # the chunk header's length disagrees
        with pytest.raises(XetCorruptError):
            decompress(payload, Scheme.LZ4, wrong)


_FUZZ_DATA = _floats(20_000, 8) + bytes(30_000)  # two 64 KiB blocks: one compressed, one stored raw


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from([Scheme.LZ4, Scheme.BG4_LZ4]), options=st.sampled_from(list(_FRAMES.values())),
       edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 1 << 20), extra=st.binary(max_size=8), wrong=st.integers(-2, 2))
def test_a_hostile_lz4_frame_is_corrupt_or_exactly_the_announced_length(
        scheme: Scheme, options: dict[str, object], edits: list[tuple[int, int]], cut: int, extra: bytes,
        wrong: int) -> None:
    """Whatever a server does to a chunk's frame (bytes changed, cut, padded,
    a header length off by a few), decoding ends in ``xet-corrupt`` or in
    exactly the announced length: never another exception, never more."""
    kw: dict[str, object] = {"block_size": lz4.frame.BLOCKSIZE_MAX64KB, "store_size": False, **options}
    body = _FUZZ_DATA if scheme == Scheme.LZ4 else bg4_split(_FUZZ_DATA)
    payload = bytearray(lz4.frame.compress(body, **kw))  # type: ignore[arg-type]
    for at, value in edits:
        payload[at % len(payload)] = value
    payload = payload[:len(payload) - cut % 16] + extra if cut % 3 == 0 else payload
    expected = max(1, len(_FUZZ_DATA) + wrong)
    try:
        out = decompress(bytes(payload), scheme, expected)
    except XetCorruptError:
        return
    assert len(out) == expected
