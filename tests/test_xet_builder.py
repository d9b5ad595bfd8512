"""Building files into xorbs and recipes, deduplication, and the answers a CAS serves from them."""

from __future__ import annotations

import hashlib
import io
import itertools
import random
from pathlib import Path

import pytest

from qwenhome.xet.builder import build_file, build_stream, index_xorbs, xorb_folder_writer
from qwenhome.xet.compression import Policy
from qwenhome.xet.reconstruction import (
    ByteRange,
    ChunkRange,
    ReconstructionV2,
    Term,
    parse_reconstruction,
)
from qwenhome.xet.serving import (
    RangeNotSatisfiable,
    merged_ranges,
    reconstruction_v1,
    reconstruction_v2,
)
from qwenhome.xet.xorb import Xorb, XorbInfo, iter_chunks
from tests.support.xet_oracle import hf_xet_hashes


class Store:
    """Xorbs by hash, as a CAS keeps them."""

    def __init__(self) -> None:
        self.xorbs: dict[str, Xorb] = {}

    def add(self, xorb: Xorb) -> None:
        assert xorb.info.hex not in self.xorbs
        self.xorbs[xorb.info.hex] = xorb

    @property
    def infos(self) -> dict[str, XorbInfo]:
        return {h: x.info for h, x in self.xorbs.items()}


def url_for(xorb: str, ranges: list[ByteRange]) -> str:
    return f"http://127.0.0.1:9/xorb/{xorb}?r=" + ",".join(f"{r.start}-{r.end}" for r in ranges)


def fetch_and_assemble(answer: ReconstructionV2, store: Store, want: int | None = None) -> bytes:
    """What a client does: fetch each range given, decode its chunks, join the terms, skip and cut."""
    chunks: dict[tuple[str, int], bytes] = {}
    for xorb, fetches in answer.xorbs.items():
        data = store.xorbs[xorb].data
        for fetch in fetches:
            for r in fetch.ranges:
                part = data[r.bytes.start:r.bytes.end + 1]
                for c in iter_chunks(part, first_index=r.chunks.start, count=len(r.chunks)):
                    chunks[(xorb, c.index)] = c.data
    out = bytearray()
    for t in answer.terms:
        term = b"".join(chunks[(t.hash, i)] for i in range(t.range.start, t.range.end))
        assert len(term) == t.unpacked_length
        out += term
    out = out[answer.offset_into_first_range:]
    return bytes(out if want is None else out[:want])


def _data(seed: int, size: int = 2_500_000) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(size // 2) + bytes(400_000) + rng.randbytes(size - size // 2 - 400_000)


def test_recipe_rebuilds_the_file_byte_for_byte_and_its_hash_is_hf_xets(tmp_path: Path) -> None:
    data = _data(1)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    store = Store()
    built = build_file(path, store.add, policy=Policy.AUTO)
    assert built.file_hash == hf_xet_hashes([path], tmp_path)[0]
    assert built.size == len(data) and built.recipe.chunk_lengths is not None
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    answer = reconstruction_v2(built.recipe, store.infos, url_for)
    assert fetch_and_assemble(parse_reconstruction(answer.dumps()), store) == data
    v1 = reconstruction_v1(built.recipe, store.infos, url_for)
    assert fetch_and_assemble(parse_reconstruction(v1.dumps()), store) == data


def test_byte_ranges_of_the_file_are_served_from_trimmed_terms() -> None:
    data = _data(2)
    store = Store()
    built = build_stream(io.BytesIO(data), store.add, max_xorb_chunks=5)
    assert len(store.xorbs) > 2
    rng = random.Random(3)
    cases = [(0, 0), (0, len(data) - 1), (len(data) - 1, len(data) - 1), (10, len(data) + 5000)]
    cases += [(a, a + rng.randint(0, 300_000)) for a in (rng.randrange(len(data)) for _ in range(30))]
    ends = list(itertools.accumulate(built.recipe.chunk_lengths or ()))
    cases += [(ends[3], ends[7] - 1), (ends[3] - 1, ends[3]), (ends[5], ends[5])]  # on chunk boundaries
    for start, last in cases:
        answer = reconstruction_v2(built.recipe, store.infos, url_for, (start, last))
        want = min(last, len(data) - 1) - start + 1
        assert fetch_and_assemble(answer, store, want) == data[start:last + 1], (start, last)
        # Trimmed to the chunks that hold the range: the first and the last chunk are both needed.
        first, final = answer.terms[0], answer.terms[-1]
        assert answer.offset_into_first_range < store.infos[first.hash].chunk_lengths[first.range.start]
        assert answer.length - want < store.infos[final.hash].chunk_lengths[final.range.end - 1]
    with pytest.raises(RangeNotSatisfiable):
        reconstruction_v2(built.recipe, store.infos, url_for, (len(data), len(data) + 10))


def test_repeated_content_is_stored_once_within_a_file() -> None:
    part = random.Random(4).randbytes(1_000_000)
    data = part + bytes(300_000) + part
    store = Store()
    built = build_stream(io.BytesIO(data), store.add)
    stored = sum(len(x.info.chunk_lengths) and sum(x.info.chunk_lengths) for x in store.xorbs.values())
    assert stored < 0.65 * len(data)
    assert fetch_and_assemble(reconstruction_v2(built.recipe, store.infos, url_for), store) == data


def test_an_updated_revision_refers_to_the_old_xorbs_for_unchanged_chunks() -> None:
    rng = random.Random(5)
    old = rng.randbytes(4_000_000)
    new = old[:1_000_000] + b"inserted" * 1000 + old[1_000_000:2_500_000] + rng.randbytes(50_000) + old[2_550_000:]
    store = Store()
    first = build_stream(io.BytesIO(old), store.add)
    known = index_xorbs(first.new_xorbs)
    before = set(store.xorbs)
    second = build_stream(io.BytesIO(new), store.add, known=known)
    added = set(store.xorbs) - before
    new_bytes = sum(sum(store.xorbs[h].info.chunk_lengths) for h in added)
    assert second.reused_chunks > 0.85 * (second.reused_chunks + second.new_chunks)
    assert new_bytes < 0.15 * len(new)
    assert {t.hash for t in second.recipe.terms} & before  # terms point at the old xorbs
    answer = reconstruction_v2(second.recipe, store.infos, url_for)
    assert len(answer.xorbs[next(iter(before))][0].ranges) >= 2  # the old xorb, with a hole
    assert fetch_and_assemble(answer, store) == new
    # Building the old revision again stores nothing.
    third = build_stream(io.BytesIO(old), store.add, known=known)
    assert third.new_chunks == 0 and third.recipe == first.recipe


def test_xorbs_are_written_to_a_folder_by_hash(tmp_path: Path) -> None:
    data = random.Random(6).randbytes(1_000_000)  # no repeated chunk: the xorb holds the file in order
    built = build_stream(io.BytesIO(data), xorb_folder_writer(tmp_path / "xorbs"), policy=Policy.NONE)
    files = sorted((tmp_path / "xorbs").iterdir())
    assert [f.name for f in files] == [f"{x.hex}.xorb" for x in sorted(built.new_xorbs, key=lambda i: i.hex)]
    joined = b"".join(c.data for f in files for c in iter_chunks(f.read_bytes()))
    assert len(files) == 1 and joined == data


def test_empty_file_builds_to_the_zero_hash(tmp_path: Path) -> None:
    store = Store()
    built = build_stream(io.BytesIO(b""), store.add)
    assert built.file_hash == "0" * 64 and built.recipe.terms == () and not store.xorbs


def test_touching_and_overlapping_chunk_ranges_merge_into_one_fetch() -> None:
    x, y = "a" * 64, "b" * 64
    terms = [Term(x, ChunkRange(0, 3), 30), Term(y, ChunkRange(5, 6), 10), Term(x, ChunkRange(3, 5), 20),
             Term(x, ChunkRange(4, 9), 50), Term(x, ChunkRange(12, 13), 10)]
    assert merged_ranges(terms) == {x: [ChunkRange(0, 9), ChunkRange(12, 13)], y: [ChunkRange(5, 6)]}


def test_layout_only_build_gives_the_same_xorbs_without_their_bytes() -> None:
    data = random.Random(8).randbytes(3_000_000)
    full, lean = Store(), Store()
    a = build_stream(io.BytesIO(data), full.add, policy=Policy.NONE, max_xorb_chunks=10)
    b = build_stream(io.BytesIO(data), lean.add, policy=Policy.NONE, max_xorb_chunks=10, keep_xorb_data=False)
    assert a.recipe == b.recipe and full.infos == lean.infos and len(lean.xorbs) > 1
    assert all(x.data == b"" for x in lean.xorbs.values())
    assert all(len(x.data) == x.info.size for x in full.xorbs.values())


def test_a_build_cut_on_known_chunk_lengths_equals_the_chunked_one_and_other_cuts_do_not() -> None:
    data = _data(9)
    chunked, cut = Store(), Store()
    a = build_stream(io.BytesIO(data), chunked.add, policy=Policy.NONE, max_xorb_chunks=10)
    assert a.recipe.chunk_lengths is not None and len(a.recipe.chunk_lengths) > 10
    # Read blocks smaller than a chunk: every chunk spans blocks.
    b = build_stream(io.BytesIO(data), cut.add, policy=Policy.NONE, max_xorb_chunks=10, block_size=10_000,
                     chunk_lengths=a.recipe.chunk_lengths)
    assert b.recipe == a.recipe and b.sha256 == a.sha256 and cut.infos == chunked.infos
    lengths = list(a.recipe.chunk_lengths)
    moved = [lengths[0] - 1, lengths[1] + 1, *lengths[2:]]  # one boundary a byte earlier
    assert build_stream(io.BytesIO(data), Store().add, chunk_lengths=moved).file_hash != a.file_hash
    for wrong in (lengths[:-1], [*lengths, 5]):  # the file is longer, or shorter, than the lengths
        with pytest.raises(ValueError, match="chunk lengths"):
            build_stream(io.BytesIO(data), Store().add, chunk_lengths=wrong)
