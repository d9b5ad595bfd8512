"""A file's recipe: its Xet hash, its size and the terms that rebuild it, in order.

A term is ``(xorb hash, chunk range [start, end), unpacked length)``; the
terms' bytes, concatenated, are the file. The offset of each term in the file
follows from the lengths. When every chunk's length is known (the file was
built here, or its bytes came through xorbs whose chunk headers were read),
the recipe keeps them too, so that a single chunk of a term can be found in a
local copy of the file later.

The same ``(xorb, chunk index)`` always names the same bytes, across files,
revisions and repositories: that is what lets a new revision reuse the bytes
of an old one.
"""

from __future__ import annotations

import bisect
import itertools
import json
from dataclasses import dataclass
from typing import Any

from . import _validate as v
from .errors import XetAnswerError
from .reconstruction import ChunkRange, ReconstructionV2, Term, parse_term

CODE = "xet-bad-recipe"
FORMAT = 1


@dataclass(frozen=True)
class FileRecipe:
    file_hash: str  # the Xet file id, hex
    size: int
    terms: tuple[Term, ...]
    # Length of every chunk of the file in term order (sum(len(t.range)) entries), when known.
    chunk_lengths: tuple[int, ...] | None = None
    # When only some are (the file came partly through xorbs, partly as plain
    # ranges): per term, its chunks' lengths, 0 where unknown. A later pull
    # chunks only the unknown chunks' bytes to complete them.
    some_lengths: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if sum(t.unpacked_length for t in self.terms) != self.size:
            raise ValueError("the terms' unpacked lengths do not add up to the file size")
        if self.chunk_lengths is not None:
            pos = 0
            for t in self.terms:
                n = len(t.range)
                if sum(self.chunk_lengths[pos:pos + n]) != t.unpacked_length or pos + n > len(self.chunk_lengths):
                    raise ValueError("chunk lengths do not match the terms' unpacked lengths")
                pos += n
            if pos != len(self.chunk_lengths):
                raise ValueError("more chunk lengths than the terms have chunks")
        if self.some_lengths is not None:
            if len(self.some_lengths) != len(self.terms):
                raise ValueError("some_lengths must have an entry per term")
            for t, ls in zip(self.terms, self.some_lengths, strict=True):
                if len(ls) != len(t.range) or sum(ls) > t.unpacked_length or (all(ls) and sum(ls) != t.unpacked_length):
                    raise ValueError("a term's chunk lengths do not match its unpacked length")

    def term_offsets(self) -> list[int]:
        """Offset in the file where each term starts, and the file size last."""
        return [0, *itertools.accumulate(t.unpacked_length for t in self.terms)]

    def term_at(self, offset: int) -> int:
        """Index of the term holding the byte at ``offset`` of the file."""
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset} outside the file's {self.size} bytes")
        return bisect.bisect_right(self.term_offsets(), offset) - 1

    def term_chunk_lengths(self, index: int) -> tuple[int, ...] | None:
        """Lengths of the chunks of term ``index``, when the recipe knows them."""
        if self.chunk_lengths is None:
            return None
        first = sum(len(t.range) for t in self.terms[:index])
        return self.chunk_lengths[first:first + len(self.terms[index].range)]

    @classmethod
    def from_reconstruction(cls, file_hash: str, answer: ReconstructionV2) -> FileRecipe:
        """The recipe of a whole file from its (full-file) reconstruction answer."""
        if answer.offset_into_first_range:
            raise ValueError("a recipe is made from a full-file reconstruction (offset 0)")
        return cls(file_hash, answer.length, answer.terms)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "file_hash": self.file_hash, "size": self.size,
                               "terms": [t.to_json() for t in self.terms]}
        if self.chunk_lengths is not None:
            out["chunk_lengths"] = list(self.chunk_lengths)
        elif self.some_lengths is not None:
            out["some_chunk_lengths"] = [list(ls) for ls in self.some_lengths]
        return out

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | Any) -> FileRecipe:
        """Parse what :meth:`to_json` wrote; raises XetAnswerError (``xet-bad-recipe``)."""
        data = v.load_json(raw, "recipe", CODE)
        try:
            o = v.obj(data, "")
            if o.get("format") != FORMAT:
                raise v.Bad("format", f"unknown recipe format {str(o.get('format'))[:20]}")
            file_hash = v.hash_hex(v.field(o, "file_hash", ""), "file_hash")
            size = v.integer(v.field(o, "size", ""), "size")
            terms = tuple(parse_term(t, f"terms[{i}]")
                          for i, t in enumerate(v.array(v.field(o, "terms", ""), "terms")))
            lengths = None
            if "chunk_lengths" in o:
                lengths = tuple(v.integer(n, f"chunk_lengths[{i}]", lo=1, hi=v.U32_MAX)
                                for i, n in enumerate(v.array(o["chunk_lengths"], "chunk_lengths")))
            some = None
            if "some_chunk_lengths" in o and lengths is None:
                some = tuple(tuple(v.integer(n, f"some_chunk_lengths[{i}][{j}]", lo=0, hi=v.U32_MAX)
                                   for j, n in enumerate(v.array(ls, f"some_chunk_lengths[{i}]")))
                             for i, ls in enumerate(v.array(o["some_chunk_lengths"], "some_chunk_lengths")))
            return cls(file_hash, size, terms, lengths, some)
        except v.Bad as exc:
            raise XetAnswerError(f"invalid recipe: {exc}", code=CODE) from None
        except ValueError as exc:
            raise XetAnswerError(f"invalid recipe: {exc}", code=CODE) from None


def coalesce(placements: list[tuple[str, int, int]]) -> list[Term]:
    """Terms from per-chunk placements ``(xorb hex, chunk index, length)``, in file order.

    Consecutive chunks of the same xorb with consecutive indices join one term.
    """
    terms: list[Term] = []
    for xorb, index, length in placements:
        last = terms[-1] if terms else None
        if last is not None and last.hash == xorb and last.range.end == index:
            terms[-1] = Term(xorb, ChunkRange(last.range.start, index + 1), last.unpacked_length + length)
        else:
            terms.append(Term(xorb, ChunkRange(index, index + 1), length))
    return terms
