"""Parts of a whole file's reconstruction, answered without asking the CAS again.

A client asks the whole file's reconstruction once (for its recipe); a part
of the file made of whole terms can then be fetched with that answer's URLs
instead of a reconstruction of its own (one round trip fewer a part). The
cut between two parts must not fall inside a fetch range: a range shared by
terms on both sides would be fetched by both parts. Parts that do not start
and end on such a cut are asked as before.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .reconstruction import MultiRangeFetch, RangeDescriptor, ReconstructionV2

_Key = tuple[str, int, int]  # (xorb, fetch entry, range): one request


def _ranges_of(answer: ReconstructionV2) -> list[list[_Key]]:
    """Per term, the fetch ranges holding its chunks (as the engine plans them)."""
    out = []
    for t in answer.terms:
        out.append([(t.hash, fi, ri) for fi, fetch in enumerate(answer.xorbs.get(t.hash, ()))
                    for ri, r in enumerate(fetch.ranges) if r.chunks.start <= t.range.start and t.range.end <= r.chunks.end])
    return out


@dataclass(frozen=True)
class Slicer:
    """A whole file's reconstruction (offset 0), cut into parts of whole terms."""

    answer: ReconstructionV2
    offsets: tuple[int, ...] = field(init=False)  # each term's start in the file, and the file's end
    cuts: tuple[int, ...] = field(init=False)  # file offsets a part may start or end at (ascending)
    _keys: tuple[tuple[_Key, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        keys = _ranges_of(self.answer)
        last: dict[_Key, int] = {}
        for i, ks in enumerate(keys):
            for k in ks:
                last[k] = i
        offsets = [0]
        for t in self.answer.terms:
            offsets.append(offsets[-1] + t.unpacked_length)
        cuts = [0]
        reach = -1  # the last term a range used so far is used by
        for i, ks in enumerate(keys):
            reach = max([reach, *(last[k] for k in ks)])
            if reach <= i and ks:  # nothing before the cut after term i is used after it
                cuts.append(offsets[i + 1])
            elif not ks:
                reach = len(keys)  # a term no range holds: nothing past it is answered here
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "cuts", tuple(sorted(set(cuts))) if self.answer.offset_into_first_range == 0
                           else ())
        object.__setattr__(self, "_keys", tuple(tuple(ks) for ks in keys))

    def is_cut(self, at: int) -> bool:
        i = bisect_left(self.cuts, at)
        return i < len(self.cuts) and self.cuts[i] == at

    def cut_at_or_after(self, at: int, end: int) -> int:
        """The first cut at ``at`` or after it, before ``end``; ``end`` if none."""
        i = bisect_left(self.cuts, at)
        return self.cuts[i] if i < len(self.cuts) and self.cuts[i] < end else end

    def cut_within(self, start: int, end: int) -> int | None:
        """The last cut in ``(start, end]``, or None."""
        i = bisect_right(self.cuts, end) - 1
        return self.cuts[i] if i >= 0 and self.cuts[i] > start else None

    def part(self, start: int, end: int) -> ReconstructionV2 | None:
        """The answer for file bytes ``[start, end)`` when both are cuts, else None."""
        cuts = self.cuts
        i, j = bisect_left(cuts, start), bisect_left(cuts, end)
        if start >= end or i == len(cuts) or cuts[i] != start or j == len(cuts) or cuts[j] != end:
            return None
        a, b = bisect_left(self.offsets, start), bisect_left(self.offsets, end)
        wanted: dict[str, dict[int, list[int]]] = {}
        for ks in self._keys[a:b]:
            for x, fi, ri in ks:
                rs = wanted.setdefault(x, {}).setdefault(fi, [])
                if ri not in rs:
                    rs.append(ri)
        xorbs: dict[str, tuple[MultiRangeFetch, ...]] = {}
        for x, per_fetch in wanted.items():
            fetches = self.answer.xorbs[x]
            xorbs[x] = tuple(MultiRangeFetch(fetches[fi].url, tuple(_pick(fetches[fi].ranges, sorted(rs))))
                             for fi, rs in sorted(per_fetch.items()))
        return ReconstructionV2(0, self.answer.terms[a:b], xorbs)


def _pick(ranges: tuple[RangeDescriptor, ...], which: list[int]) -> list[RangeDescriptor]:
    return [ranges[i] for i in which]
