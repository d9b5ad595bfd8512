"""Which bytes of a file a set of local files already hold, by their recipes.

The same ``(xorb, chunk index)`` always names the same bytes, so a term of a
new file whose xorb appears in a local file's recipe can be copied from that
file for the chunks both have: a new revision's unchanged chunks, a tensor a
fine-tune shares with its base. A local recipe must know its chunks' lengths
(where each chunk lies); a new term's chunks are placed from its start while
their lengths are known, and from its end likewise (a term may begin with
chunks no local file has).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .recipe import FileRecipe
from .reconstruction import Term


@dataclass(frozen=True)
class LocalRange:
    """``length`` bytes of local file ``key`` at ``src_offset`` are the new file's at ``offset``."""

    key: str
    src_offset: int
    offset: int
    length: int


class LocalChunks:
    """Where the chunks of each xorb lie in local files."""

    def __init__(self) -> None:
        # xorb -> chunk index -> (file key, offset in it, length)
        self._chunks: dict[str, dict[int, tuple[str, int, int]]] = {}

    def add(self, key: str, recipe: FileRecipe) -> None:
        """The chunks of local file ``key``, by its recipe (which must know the
        chunks' lengths)."""
        if recipe.chunk_lengths is None:
            raise ValueError("a local file's recipe must know its chunk lengths")
        lengths = iter(recipe.chunk_lengths)
        pos = 0
        for t in recipe.terms:
            where = self._chunks.setdefault(t.hash, {})
            for i in range(t.range.start, t.range.end):
                n = next(lengths)
                where.setdefault(i, (key, pos, n))
                pos += n

    def xorbs(self) -> set[str]:
        return set(self._chunks)

    def length(self, xorb: str, index: int) -> int | None:
        """The length of chunk ``index`` of ``xorb``, when a local file holds it."""
        where = self._chunks.get(xorb, {}).get(index)
        return where[2] if where else None

    def find(self, recipe: FileRecipe) -> list[LocalRange]:
        """The ranges of ``recipe``'s file that local files hold, merged where
        they follow each other in one local file, in file order."""
        out: list[LocalRange] = []
        for t, offset in zip(recipe.terms, recipe.term_offsets(), strict=False):
            where = self._chunks.get(t.hash)
            if where is None:
                continue
            for key, src, at, n in _placed(t, offset, where):
                last = out[-1] if out else None
                if last is not None and last.key == key and last.src_offset + last.length == src \
                        and last.offset + last.length == at:
                    out[-1] = LocalRange(key, last.src_offset, last.offset, last.length + n)
                else:
                    out.append(LocalRange(key, src, at, n))
        return out


def _placed(t: Term, offset: int, where: dict[int, tuple[str, int, int]]) -> Iterator[tuple[str, int, int, int]]:
    """(local file, offset there, offset in the new file, length) of each
    chunk of term ``t`` (at ``offset`` of the new file) a local file holds."""
    start, end = t.range.start, t.range.end
    at: dict[int, int] = {}
    pos = offset
    k = start
    while k < end and k in where:  # placed from the term's start
        at[k] = pos
        pos += where[k][2]
        k += 1
    if k == end and pos != offset + t.unpacked_length:
        return  # the lengths disagree with the term: trust neither
    pos = offset + t.unpacked_length
    k = end - 1
    while k >= start and k in where and k not in at:  # and from its end
        pos -= where[k][2]
        at[k] = pos
        k -= 1
    for k in sorted(at):
        key, src, n = where[k]
        if offset <= at[k] and at[k] + n <= offset + t.unpacked_length:
            yield key, src, at[k], n
