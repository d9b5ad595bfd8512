"""The sink that decodes a xorb range into its file (``transfer/xorbs.py``):
whatever way the body is cut into reads (inside a header, inside a payload,
many chunks at once), every chunk lands decoded at each offset its terms
give, and what it reports written is exactly what is on disk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from qwenhome.transfer.files import FileJob, FileState
from qwenhome.transfer.partmap import Intervals
from qwenhome.transfer.xorbs import ChunkSink, Placement, Plan
from qwenhome.xet.compression import Policy
from qwenhome.xet.errors import XetCorruptError
from qwenhome.xet.xorb import encode_chunk


def _chunks(seed: int) -> list[bytes]:
    """Chunks of 1 byte to 128 KiB, random (stored as is) and repetitive (compressed)."""
    rng = random.Random(seed)
    out = []
    for i in range(24):
        n = rng.choice([1, 9, 8192, rng.randint(8192, 131072), 131072])
        out.append(rng.randbytes(n) if i % 2 else (b"layer %d " % i * (n // 8 + 1))[:n])
    return out


def _xorb(chunks: list[bytes]) -> bytes:
    return b"".join(encode_chunk(c, Policy.AUTO if i % 3 else Policy.NONE).blob for i, c in enumerate(chunks))


def _file(tmp_path: Path, size: int) -> FileState:
    job = FileJob("f" * 64, "model.bin", size, None, None, [], tmp_path / "model.part")
    return FileState.of(job, Intervals(), None)


def _feed(sink: ChunkSink, raw: bytes, cuts: list[int]) -> list[tuple[int, int]]:
    """Feed ``raw`` to the sink in reads ending at ``cuts`` (through one reused
    buffer, as the I/O paths do); returns every file range it reported."""
    buf = memoryview(bytearray(max(b - a for a, b in zip([0, *cuts], cuts, strict=False)) or 1))
    landed: list[tuple[int, int]] = []
    pos = 0
    for end in cuts:
        n = end - pos
        buf[:n] = raw[pos:end]
        sink.write(buf, n, pos)
        upto, ranges = sink.commit()
        assert upto <= end
        landed += ranges
        pos = end
    return landed


@pytest.mark.parametrize("reads", ["one", "small", "random", "headers"])
def test_any_cut_of_a_xorb_range_decodes_every_chunk_into_place(tmp_path: Path, reads: str) -> None:
    chunks = _chunks(7)
    raw = _xorb(chunks)
    first, stop = 2, len(chunks) - 1  # the range holds chunks [2, 23)
    start = len(_xorb(chunks[:first]))
    body = raw[start:len(_xorb(chunks[:stop]))]
    # Two terms: chunks 3-9 at the file's start, chunks 7-22 after them (7 and 8 used twice).
    a, b = b"".join(chunks[3:9]), b"".join(chunks[7:22])
    expected = a + b
    f = _file(tmp_path, len(expected))
    plan = Plan("x" * 64, "http://127.0.0.1/x", start, start + len(body) - 1, first, stop,
                (Placement(3, 9, 0, len(a)), Placement(7, 22, len(a), len(b))))
    sink = ChunkSink(f, plan, learned := {})
    sink.open(plan.size, fresh=True)
    rng = random.Random(reads)
    if reads == "one":
        cuts = [len(body)]
    elif reads == "small":
        cuts = [*range(997, len(body), 997), len(body)]
    elif reads == "random":
        cuts = sorted({rng.randint(1, len(body)) for _ in range(40)} | {len(body)})
    else:  # every read but the last ends inside a chunk header
        ends = [len(_xorb(chunks[first:i])) for i in range(first + 1, stop)]
        cuts = [e + rng.randint(1, 7) for e in ends] + [len(body)]
    landed = _feed(sink, body, cuts)
    f.dest.close()
    on_disk = (tmp_path / "model.part").read_bytes()
    assert on_disk == expected
    covered = Intervals()
    for lo, hi in landed:
        covered.add(lo, hi)
    assert covered.starts == [0] and covered.ends == [len(expected)]  # reported: all, and nothing else
    assert learned == {("x" * 64, i): len(chunks[i]) for i in range(first, stop)}


def test_after_a_corrupt_chunk_decoding_starts_again_from_the_first_chunk_not_recorded(tmp_path: Path) -> None:
    chunks = _chunks(11)[:6]
    good = _xorb(chunks)
    raw = bytearray(good)
    raw[len(_xorb(chunks[:4]))] = 7  # chunk 4's header says version 7
    expected = b"".join(chunks)
    f = _file(tmp_path, len(expected))
    plan = Plan("y" * 64, "http://127.0.0.1/y", 0, len(raw) - 1, 0, 6, (Placement(0, 6, 0, len(expected)),))
    sink = ChunkSink(f, plan, {})
    sink.open(plan.size, fresh=True)
    cut = len(_xorb(chunks[:2])) + 5  # the first read ends inside chunk 2
    _feed(sink, bytes(raw), [cut])
    with pytest.raises(XetCorruptError, match="version 7"):
        sink.write(memoryview(bytes(raw[cut:])), len(raw) - cut, cut)
    # The span is asked again from the first chunk the run recorded (chunk 2).
    sink.open(plan.size, fresh=False)
    upto, _ = sink.commit()
    assert upto == len(_xorb(chunks[:2]))
    landed = _feed_from(sink, good, upto)
    f.dest.close()
    assert (tmp_path / "model.part").read_bytes() == expected
    assert landed == [(len(b"".join(chunks[:2])), len(expected))]


def _feed_from(sink: ChunkSink, raw: bytes, pos: int) -> list[tuple[int, int]]:
    sink.write(memoryview(raw[pos:]), len(raw) - pos, pos)
    return sink.commit()[1]


@pytest.mark.parametrize("places", [1, 2])
def test_bg4_chunks_beyond_a_threads_regroup_buffer_land_whole(tmp_path: Path, places: int) -> None:
    """Float chunks (stored BG4-LZ4) decoding to more than the decoding
    thread's reused buffer in one read, into one run of the file (written
    by one call, unless the buffer is full), or each chunk at two places:
    the buffer is written out and reused, never overwritten under a run
    not yet written."""
    import numpy as np

    from qwenhome.transfer.xorbs import ARENA
    from qwenhome.xet.compression import Scheme
    from qwenhome.xet.xorb import HEADER_LEN, ChunkHeader

    rng = np.random.default_rng(3)
    chunks = [(rng.standard_normal(16_000 + 3 * i) * 0.02).astype(np.float32).tobytes() + b"xyz"[: i % 4]
              for i in range(3 * ARENA // 64_000)]
    raw = b"".join(encode_chunk(c, Policy.AUTO).blob for c in chunks)
    assert ChunkHeader.unpack(raw[:HEADER_LEN]).scheme == Scheme.BG4_LZ4
    whole = b"".join(chunks)
    expected = whole * places
    assert len(whole) > 2 * ARENA
    f = _file(tmp_path, len(expected))
    n = len(chunks)
    plan = Plan("z" * 64, "http://127.0.0.1/z", 0, len(raw) - 1, 0, n,
                tuple(Placement(0, n, k * len(whole), len(whole)) for k in range(places)))
    sink = ChunkSink(f, plan, {})
    sink.open(plan.size, fresh=True)
    _feed(sink, raw, [len(raw)])
    f.dest.close()
    assert (tmp_path / "model.part").read_bytes() == expected
