"""The CAS reconstruction answers (specification: ``api``, ``download-protocol``).

``GET /v2/reconstructions/{file_id}`` answers::

    {"offset_into_first_range": n,
     "terms": [{"hash": xorb, "range": {"start", "end"}, "unpacked_length": n}, ...],
     "xorbs": {xorb: [{"url": signed, "ranges": [{"chunks": {"start", "end"},
                                                  "bytes": {"start", "end"}}, ...]}, ...]}}

``/v1/reconstructions/{file_id}`` answers ``fetch_info`` instead of ``xorbs``:
``{xorb: [{"range": {"start", "end"}, "url": signed, "url_range": {"start", "end"}}]}``.

Chunk ranges are end-exclusive ``[start, end)``; byte ranges (``bytes``,
``url_range``) are end-inclusive, as in an HTTP ``Range`` header.

Parsing checks everything a client will rely on: types and bounds, hashes,
http(s) URLs, non-empty ranges, ranges of a fetch entry in ascending order,
each term's unpacked length possible for its chunk count, the offset inside
the first term, and every term's chunks covered by the ranges given for its
xorb. Hostile JSON gives XetAnswerError (``xet-bad-reconstruction``) naming
the bad field, never a KeyError or a traceback. Unknown fields are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _validate as v
from .chunking import MAX_CHUNK_SIZE
from .errors import XetAnswerError
from .xorb import HEADER_LEN

CODE = "xet-bad-reconstruction"


@dataclass(frozen=True)
class ChunkRange:
    """Chunk indices ``[start, end)`` of a xorb (end-exclusive)."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end]`` of a serialized xorb (end-inclusive, as HTTP ranges are)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class Term:
    """Chunks ``range`` of xorb ``hash`` (hex), ``unpacked_length`` bytes once decompressed."""

    hash: str
    range: ChunkRange
    unpacked_length: int

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "unpacked_length": self.unpacked_length, "range": self.range.to_json()}


@dataclass(frozen=True)
class RangeDescriptor:
    chunks: ChunkRange
    bytes: ByteRange

    def to_json(self) -> dict[str, Any]:
        return {"chunks": self.chunks.to_json(), "bytes": self.bytes.to_json()}


@dataclass(frozen=True)
class MultiRangeFetch:
    """One signed URL and the ranges it authorizes, fetched with a single (multi-)range request."""

    url: str
    ranges: tuple[RangeDescriptor, ...]

    def range_header(self) -> str:
        return "bytes=" + ",".join(f"{r.bytes.start}-{r.bytes.end}" for r in self.ranges)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ranges": [r.to_json() for r in self.ranges]}


@dataclass(frozen=True)
class FetchInfo:
    """A v1 fetch entry: one signed URL for one range of chunks."""

    range: ChunkRange
    url: str
    url_range: ByteRange

    def to_json(self) -> dict[str, Any]:
        return {"range": self.range.to_json(), "url": self.url, "url_range": self.url_range.to_json()}


def _total(terms: Iterable[Term]) -> int:
    return sum(t.unpacked_length for t in terms)


@dataclass(frozen=True)
class ReconstructionV2:
    offset_into_first_range: int
    terms: tuple[Term, ...]
    xorbs: Mapping[str, tuple[MultiRangeFetch, ...]]

    @property
    def length(self) -> int:
        """Bytes of file data the terms give, after skipping ``offset_into_first_range``."""
        return _total(self.terms) - self.offset_into_first_range

    def to_json(self) -> dict[str, Any]:
        return {"offset_into_first_range": self.offset_into_first_range,
                "terms": [t.to_json() for t in self.terms],
                "xorbs": {h: [f.to_json() for f in fetches] for h, fetches in self.xorbs.items()}}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | Any) -> ReconstructionV2:
        """Parse and check a v2 answer (bytes, text or decoded JSON); raises XetAnswerError."""
        data = v.load_json(raw, "reconstruction", CODE)
        try:
            offset, terms = _parse_head(data)
            xorbs: dict[str, tuple[MultiRangeFetch, ...]] = {}
            for key, entries in v.obj(v.field(data, "xorbs", ""), "xorbs").items():
                path = f"xorbs[{str(key)[:80]!r}]"
                xorbs[v.hash_hex(key, path)] = tuple(
                    _parse_fetch(e, f"{path}[{i}]") for i, e in enumerate(_non_empty(entries, path)))
            _check_coverage(terms, {h: [r.chunks for f in fs for r in f.ranges] for h, fs in xorbs.items()})
        except v.Bad as exc:
            raise XetAnswerError(f"invalid reconstruction: {exc}", code=CODE) from None
        return cls(offset, terms, xorbs)


@dataclass(frozen=True)
class ReconstructionV1:
    offset_into_first_range: int
    terms: tuple[Term, ...]
    fetch_info: Mapping[str, tuple[FetchInfo, ...]]

    @property
    def length(self) -> int:
        return _total(self.terms) - self.offset_into_first_range

    def to_v2(self) -> ReconstructionV2:
        """The same answer in the v2 shape: each fetch entry a single-range fetch."""
        xorbs = {h: tuple(MultiRangeFetch(f.url, (RangeDescriptor(f.range, f.url_range),)) for f in fs)
                 for h, fs in self.fetch_info.items()}
        return ReconstructionV2(self.offset_into_first_range, self.terms, xorbs)

    def to_json(self) -> dict[str, Any]:
        return {"offset_into_first_range": self.offset_into_first_range,
                "terms": [t.to_json() for t in self.terms],
                "fetch_info": {h: [f.to_json() for f in fs] for h, fs in self.fetch_info.items()}}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | Any) -> ReconstructionV1:
        """Parse and check a v1 answer; raises XetAnswerError."""
        data = v.load_json(raw, "reconstruction", CODE)
        try:
            offset, terms = _parse_head(data)
            info: dict[str, tuple[FetchInfo, ...]] = {}
            for key, entries in v.obj(v.field(data, "fetch_info", ""), "fetch_info").items():
                path = f"fetch_info[{str(key)[:80]!r}]"
                info[v.hash_hex(key, path)] = tuple(
                    _parse_fetch_info(e, f"{path}[{i}]") for i, e in enumerate(_non_empty(entries, path)))
            _check_coverage(terms, {h: [f.range for f in fs] for h, fs in info.items()})
        except v.Bad as exc:
            raise XetAnswerError(f"invalid reconstruction: {exc}", code=CODE) from None
        return cls(offset, terms, info)


def parse_reconstruction(raw: bytes | str | Any) -> ReconstructionV2:
    """Parse either answer (v2 has ``xorbs``, v1 ``fetch_info``) into the v2 shape."""
    data = v.load_json(raw, "reconstruction", CODE)
    if isinstance(data, dict) and "xorbs" not in data and "fetch_info" in data:
        return ReconstructionV1.from_json(data).to_v2()
    return ReconstructionV2.from_json(data)


# -- parsing helpers (raise v.Bad with the path of the bad field) -------------------------------

def _non_empty(value: Any, path: str) -> list[Any]:
    items = v.array(value, path)
    if not items:
        raise v.Bad(path, "empty")
    return items


def _chunk_range(value: Any, path: str) -> ChunkRange:
    o = v.obj(value, path)
    start = v.integer(v.field(o, "start", path), f"{path}.start", hi=v.U32_MAX)
    end = v.integer(v.field(o, "end", path), f"{path}.end", hi=v.U32_MAX)
    if start >= end:
        raise v.Bad(path, f"empty chunk range [{start}, {end})")
    return ChunkRange(start, end)


def _byte_range(value: Any, path: str, chunks: ChunkRange) -> ByteRange:
    o = v.obj(value, path)
    start = v.integer(v.field(o, "start", path), f"{path}.start")
    end = v.integer(v.field(o, "end", path), f"{path}.end")
    if start > end:
        raise v.Bad(path, f"byte range {start}-{end} ends before it starts (the end is inclusive)")
    if end - start + 1 < HEADER_LEN * len(chunks):
        raise v.Bad(path, f"{end - start + 1} bytes cannot hold {len(chunks)} chunks")
    return ByteRange(start, end)


def parse_term(value: Any, path: str) -> Term:
    o = v.obj(value, path)
    digest = v.hash_hex(v.field(o, "hash", path), f"{path}.hash")
    chunks = _chunk_range(v.field(o, "range", path), f"{path}.range")
    unpacked = v.integer(v.field(o, "unpacked_length", path), f"{path}.unpacked_length", hi=v.U32_MAX)
    if not len(chunks) <= unpacked <= len(chunks) * MAX_CHUNK_SIZE:
        raise v.Bad(f"{path}.unpacked_length", f"{unpacked} bytes impossible for {len(chunks)} chunks")
    return Term(digest, chunks, unpacked)


def _parse_head(data: Any) -> tuple[int, tuple[Term, ...]]:
    top = v.obj(data, "")
    offset = v.integer(v.field(top, "offset_into_first_range", ""), "offset_into_first_range")
    terms = tuple(parse_term(t, f"terms[{i}]") for i, t in enumerate(v.array(v.field(top, "terms", ""), "terms")))
    first = terms[0].unpacked_length if terms else 0
    if offset and offset >= first:
        raise v.Bad("offset_into_first_range", f"{offset} is not inside the first term ({first} bytes)")
    return offset, terms


def _parse_fetch(value: Any, path: str) -> MultiRangeFetch:
    o = v.obj(value, path)
    url = v.http_url(v.field(o, "url", path), f"{path}.url")
    ranges: list[RangeDescriptor] = []
    for i, r in enumerate(_non_empty(v.field(o, "ranges", path), f"{path}.ranges")):
        rp = f"{path}.ranges[{i}]"
        ro = v.obj(r, rp)
        chunks = _chunk_range(v.field(ro, "chunks", rp), f"{rp}.chunks")
        desc = RangeDescriptor(chunks, _byte_range(v.field(ro, "bytes", rp), f"{rp}.bytes", chunks))
        if ranges and (desc.chunks.start < ranges[-1].chunks.end or desc.bytes.start <= ranges[-1].bytes.end):
            raise v.Bad(rp, "ranges overlap or are not in ascending order")
        ranges.append(desc)
    return MultiRangeFetch(url, tuple(ranges))


def _parse_fetch_info(value: Any, path: str) -> FetchInfo:
    o = v.obj(value, path)
    chunks = _chunk_range(v.field(o, "range", path), f"{path}.range")
    url = v.http_url(v.field(o, "url", path), f"{path}.url")
    return FetchInfo(chunks, url, _byte_range(v.field(o, "url_range", path), f"{path}.url_range", chunks))


def _check_coverage(terms: Iterable[Term], available: Mapping[str, list[ChunkRange]]) -> None:
    """Every term's chunks lie within the union of the chunk ranges offered for its xorb."""
    merged: dict[str, list[tuple[int, int]]] = {}
    for h, ranges in available.items():
        spans: list[tuple[int, int]] = []
        for r in sorted(ranges, key=lambda r: r.start):
            if spans and r.start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], r.end))
            else:
                spans.append((r.start, r.end))
        merged[h] = spans
    for i, t in enumerate(terms):
        if not any(a <= t.range.start and t.range.end <= b for a, b in merged.get(t.hash, ())):
            raise v.Bad(f"terms[{i}]", f"chunks [{t.range.start}, {t.range.end}) of xorb {t.hash[:16]}... "
                                      "are not covered by the ranges given for it")
