"""What a caller tells the engine about a file it may fetch through Xet.

The protocol (the token, the reconstruction requests) lives with the Hub
client; the engine only calls :attr:`XetJob.ask` for the reconstruction of a
byte range of the file, whenever it needs fresh xorb URLs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Source
from ..xet.recipe import FileRecipe
from ..xet.reconstruction import ReconstructionV2
from ..xet.slicing import Slicer

# A reconstruction of file bytes [start, end) (None: the whole file), with fresh URLs.
Ask = Callable[[tuple[int, int] | None], ReconstructionV2]
# Seconds the whole file's answer serves parts of it: signed URLs are short-lived
# (a 403 asks again anyway; past this, every part is asked).
WHOLE_FRESH = 60.0


@dataclass(frozen=True)
class Copy:
    """``length`` bytes of a local file at ``src_offset`` are the file's bytes at ``offset``."""

    src: Path
    src_offset: int
    offset: int
    length: int


@dataclass
class XetJob:
    source: Source  # the Xet side of the Hub source: messages and failure verdicts name it
    ask: Ask
    recipe: FileRecipe  # the whole file's terms (and chunk lengths, when known)
    copies: list[Copy] = field(default_factory=list)  # chunks the home holds already (see store.recipes)
    # Chunk lengths decoded by this pull, (xorb, chunk index) -> length: the
    # recipe kept for the file gets them (written by the decoding threads).
    learned: dict[tuple[str, int], int] = field(default_factory=dict)
    xet_bytes: int = 0  # bytes the file got through xorbs (raw, as received)
    whole: Slicer | None = None  # the whole file's reconstruction, as the caller asked it
    whole_at: float = field(default_factory=time.monotonic)

    def slicer(self, replans: int = 0) -> Slicer | None:
        """The whole file's answer while its URLs are fresh, else None; None
        too for bytes whose URLs were refused (``replans``): they ask anew."""
        fresh = self.whole is not None and time.monotonic() - self.whole_at < WHOLE_FRESH
        return self.whole if fresh and not replans else None

    def part(self, start: int, end: int, replans: int = 0) -> ReconstructionV2 | None:
        """File bytes ``[start, end)``'s reconstruction from the whole file's
        answer, when :meth:`slicer` gives it and they are a run of its terms; else None."""
        whole = self.slicer(replans)
        return whole.part(start, end) if whole is not None else None

    def term_lengths(self) -> tuple[tuple[int, ...], ...]:
        """Per term, its chunks' lengths this pull learnt (0: not learnt)."""
        return tuple(tuple(self.learned.get((t.hash, i), 0) for i in range(t.range.start, t.range.end))
                     for t in self.recipe.terms)

    def chunk_lengths(self, known: dict[tuple[str, int], int] | None = None) -> tuple[int, ...] | None:
        """Every chunk's length in term order, when all are known."""
        out: list[int] = []
        for t in self.recipe.terms:
            for i in range(t.range.start, t.range.end):
                n = self.learned.get((t.hash, i)) or (known or {}).get((t.hash, i))
                if not n:
                    return None
                out.append(n)
        return tuple(out)
