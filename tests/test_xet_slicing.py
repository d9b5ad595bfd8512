"""Parts of a whole file's reconstruction, answered from it without asking
again (xet/slicing.py): a part starts and ends where no fetch range is shared
across, and the parts' xorb ranges are exactly the whole answer's."""

from __future__ import annotations

from typing import Any

from qwenhome.transfer.xorbs import plan_items
from qwenhome.xet.reconstruction import ReconstructionV2
from qwenhome.xet.slicing import Slicer

A = "a1" * 32
B = "b2" * 32
C = "c3" * 32


def _url(x: str) -> str:
    return f"https://transfer.example/xorb/default/{x}?sig=1"


def _answer(terms: list[tuple[str, int, int, int]], ranges: dict[str, list[tuple[int, int, int, int]]]) -> ReconstructionV2:
    """terms: (xorb, first chunk, end chunk, unpacked length); ranges: per xorb, (chunks, bytes) of one fetch entry."""
    doc: dict[str, Any] = {
        "offset_into_first_range": 0,
        "terms": [{"hash": x, "range": {"start": s, "end": e}, "unpacked_length": n} for x, s, e, n in terms],
        "xorbs": {x: [{"url": _url(x), "ranges": [{"chunks": {"start": cs, "end": ce}, "bytes": {"start": bs, "end": be}}
                                                  for cs, ce, bs, be in rs]}] for x, rs in ranges.items()},
    }
    return ReconstructionV2.from_json(doc)


def _plans(answer: ReconstructionV2, start: int, size: int) -> set[tuple[str, int, int, tuple[int, ...]]]:
    return {(p.xorb, p.start, p.end, tuple(q.offset for q in p.placements)) for p in plan_items(answer, start, size)}


def test_a_fetch_range_shared_by_two_terms_is_never_cut_through() -> None:
    # The specification's example: xorb A's one range holds the first and the last term.
    whole = _answer([(A, 1, 4, 300_000), (B, 0, 3, 150_000), (A, 3, 43, 3_000_000)],
                    {A: [(1, 43, 57_980, 1_433_008)], B: [(0, 3, 0, 65_670)]})
    s = Slicer(whole)
    assert s.cuts == (0, 3_450_000)
    assert s.part(0, 300_000) is None and s.part(300_000, 3_450_000) is None
    assert s.part(0, 3_450_000) == whole


def test_parts_between_cuts_fetch_exactly_the_whole_answers_ranges() -> None:
    terms = [(A, 0, 4, 250_000), (B, 0, 3, 190_000), (A, 10, 20, 640_000), (C, 0, 8, 500_000), (C, 8, 9, 60_000)]
    whole = _answer(terms, {A: [(0, 4, 0, 249_999), (10, 20, 600_000, 1_239_999)],
                            B: [(0, 3, 0, 189_999)], C: [(0, 9, 0, 559_999)]})
    size = sum(t[3] for t in terms)
    s = Slicer(whole)
    # (C's one range holds the last two terms: no cut between them)
    assert s.cuts == (0, 250_000, 440_000, 1_080_000, size)
    assert s.part(1_080_000, 1_580_000) is None and s.part(0, 100) is None
    mid = s.part(250_000, 1_080_000)
    assert mid is not None and [t.hash for t in mid.terms] == [B, A]
    assert set(mid.xorbs) == {A, B} and [r.chunks.start for r in mid.xorbs[A][0].ranges] == [10]
    # Any split at the cuts plans the whole answer's xorb ranges, each once.
    union: set[tuple[str, int, int, tuple[int, ...]]] = set()
    count = 0
    for a, b in zip(s.cuts, s.cuts[1:], strict=False):
        part = s.part(a, b)
        assert part is not None
        union |= _plans(part, a, size)
        count += len(plan_items(part, a, size))
    assert union == _plans(whole, 0, size) and count == len(union)
    assert s.cut_at_or_after(300_000, size) == 440_000 and s.cut_at_or_after(1_100_000, 1_200_000) == 1_200_000
    assert s.cut_within(0, 500_000) == 440_000 and s.cut_within(250_000, 300_000) is None
    assert s.is_cut(440_000) and not s.is_cut(440_001)


def test_a_range_answer_gives_no_parts() -> None:
    doc = _answer([(A, 0, 4, 250_000)], {A: [(0, 4, 0, 249_999)]}).to_json()
    doc["offset_into_first_range"] = 1000
    s = Slicer(ReconstructionV2.from_json(doc))
    assert s.cuts == () and s.part(0, 249_000) is None
