"""Ranged requests: the one builder of ``Range``/``If-Range`` and the one
reader of ``Content-Range``, for every path that fetches part of a file."""

from __future__ import annotations

from dataclasses import dataclass

# A byte count or offset has at most 19 digits (2**63 is 9.2e18); longer ones
# are a hostile or broken server, and int() of 4,300+ digits raises.
_MAX_DIGITS = 19


def parse_count(text: str | None) -> int | None:
    """A non-negative decimal number as servers send it in headers (ASCII
    digits only: ``str.isdigit`` also takes ``'²'``), or None."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def range_headers(start: int, end: int, validator: str | None = None) -> dict[str, str]:
    """Headers asking for bytes ``[start, end)``. When resuming (``start > 0``)
    with the file's strong validator (its ETag), ``If-Range`` makes a server
    whose file changed answer with the whole new file instead of a range of
    it, so bytes of two versions are never joined."""
    headers = {"Range": f"bytes={start}-{end - 1}"}
    if validator and start > 0:
        headers["If-Range"] = validator
    return headers


@dataclass(frozen=True)
class ContentRange:
    """``Content-Range: bytes first-last/total`` (``last`` inclusive)."""

    first: int
    last: int
    total: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @classmethod
    def parse(cls, value: str | None) -> ContentRange | None:
        """The satisfied range a 206 names, or None when absent or malformed
        (an unknown total, ``*``, is malformed here: a file's size is known)."""
        unit, _, span = (value or "").strip().partition(" ")
        first, _, rest = span.strip().partition("-")
        last, _, total = rest.partition("/")
        a, b, n = parse_count(first), parse_count(last), parse_count(total)
        if unit != "bytes" or a is None or b is None or n is None:
            return None
        return cls(a, b, n)


def strong_validator(etag: str | None) -> str | None:
    """An ETag fit for ``If-Range``: a weak one (``W/``) may not be used there."""
    return etag if etag and not etag.startswith("W/") else None
