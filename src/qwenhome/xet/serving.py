"""What a CAS answers for a file: reconstructions built from a recipe and the xorbs' indexes.

A server (the test Xet server, the mirror) holds, per file, its
:class:`~qwenhome.xet.recipe.FileRecipe`, and per xorb, its serialized bytes and
:class:`~qwenhome.xet.xorb.XorbInfo` (where each chunk lies). For a request of
the whole file or of a byte range of it (the reconstruction request's
``Range: bytes=a-b``, end inclusive), these functions choose the terms,
trim the first and last to the chunks that hold the range, set
``offset_into_first_range``, and give for each xorb the merged chunk ranges
and their byte ranges, with URLs that the server signs (``url_for``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .recipe import FileRecipe
from .reconstruction import (
    ByteRange,
    ChunkRange,
    FetchInfo,
    MultiRangeFetch,
    RangeDescriptor,
    ReconstructionV1,
    ReconstructionV2,
    Term,
)
from .xorb import XorbInfo

# (xorb hash hex, the byte ranges the URL must authorize) -> a URL the server will honour.
UrlFor = Callable[[str, Sequence[ByteRange]], str]


class RangeNotSatisfiable(ValueError):
    """The requested range starts at or after the end of the file (HTTP 416)."""


def select_terms(recipe: FileRecipe, xorbs: Mapping[str, XorbInfo],
                 file_range: tuple[int, int] | None = None) -> tuple[list[Term], int]:
    """The terms covering ``file_range`` (first, last inclusive; None for all), and the offset into the first.

    A range past the end of the file is cut at the end, as HTTP does;
    ``RangeNotSatisfiable`` when it starts at or after the end.
    """
    if file_range is None:
        return list(recipe.terms), 0
    start, last = file_range
    if start < 0 or last < start:
        raise ValueError(f"invalid byte range {start}-{last}")
    if start >= recipe.size:
        raise RangeNotSatisfiable(f"range starts at {start}, the file has {recipe.size} bytes")
    last = min(last, recipe.size - 1)
    offsets = recipe.term_offsets()
    first_i, last_i = recipe.term_at(start), recipe.term_at(last)
    terms = list(recipe.terms[first_i:last_i + 1])
    skip = start - offsets[first_i]
    # Trim whole chunks outside the range from the first and last terms.
    head = _trim_front(terms[0], xorbs[terms[0].hash], skip)
    skip -= terms[0].unpacked_length - head.unpacked_length
    terms[0] = head
    keep = last - offsets[last_i] + 1 - (recipe.terms[last_i].unpacked_length - terms[-1].unpacked_length)
    terms[-1] = _trim_back(terms[-1], xorbs[terms[-1].hash], keep)
    return terms, skip


def _trim_front(term: Term, info: XorbInfo, skip: int) -> Term:
    start, pos = term.range.start, 0
    while pos + info.chunk_lengths[start] <= skip:
        pos += info.chunk_lengths[start]
        start += 1
    return Term(term.hash, ChunkRange(start, term.range.end), term.unpacked_length - pos)


def _trim_back(term: Term, info: XorbInfo, keep: int) -> Term:
    end, pos = term.range.start, 0
    while pos < keep:
        pos += info.chunk_lengths[end]
        end += 1
    return Term(term.hash, ChunkRange(term.range.start, end), pos)


def merged_ranges(terms: Sequence[Term]) -> dict[str, list[ChunkRange]]:
    """Per xorb, the chunk ranges the terms need, merged where they overlap or touch, ascending."""
    per: dict[str, list[ChunkRange]] = {}
    for t in terms:
        per.setdefault(t.hash, []).append(t.range)
    out: dict[str, list[ChunkRange]] = {}
    for h, ranges in per.items():
        merged: list[ChunkRange] = []
        for r in sorted(ranges, key=lambda r: r.start):
            if merged and r.start <= merged[-1].end:
                merged[-1] = ChunkRange(merged[-1].start, max(merged[-1].end, r.end))
            else:
                merged.append(r)
        out[h] = merged
    return out


def _descriptors(xorbs: Mapping[str, XorbInfo], xorb: str, ranges: list[ChunkRange]) -> list[RangeDescriptor]:
    info = xorbs[xorb]
    return [RangeDescriptor(r, ByteRange(*info.byte_range(r.start, r.end))) for r in ranges]


def reconstruction_v2(recipe: FileRecipe, xorbs: Mapping[str, XorbInfo], url_for: UrlFor,
                      file_range: tuple[int, int] | None = None) -> ReconstructionV2:
    """The v2 answer: per xorb one URL for all its merged ranges (fetched as one multi-range request)."""
    terms, skip = select_terms(recipe, xorbs, file_range)
    fetches: dict[str, tuple[MultiRangeFetch, ...]] = {}
    for h, ranges in merged_ranges(terms).items():
        descs = _descriptors(xorbs, h, ranges)
        fetches[h] = (MultiRangeFetch(url_for(h, [d.bytes for d in descs]), tuple(descs)),)
    return ReconstructionV2(skip, tuple(terms), fetches)


def reconstruction_v1(recipe: FileRecipe, xorbs: Mapping[str, XorbInfo], url_for: UrlFor,
                      file_range: tuple[int, int] | None = None) -> ReconstructionV1:
    """The v1 answer: one URL per merged chunk range."""
    terms, skip = select_terms(recipe, xorbs, file_range)
    info: dict[str, tuple[FetchInfo, ...]] = {}
    for h, ranges in merged_ranges(terms).items():
        info[h] = tuple(FetchInfo(d.chunks, url_for(h, [d.bytes]), d.bytes)
                        for d in _descriptors(xorbs, h, ranges))
    return ReconstructionV1(skip, tuple(terms), info)
