"""The Xet recipes of the home's blobs: what a pull keeps of each Xet file it
fetched (``$QWEN_HOME/qwenhome/xet/pulled/<sha256>.json``), and the chunk
index a later pull finds local bytes by.

A recipe is the file's Xet hash, size and terms, and every chunk's length
when known: a file that came through xorbs had every chunk header read; one
that came through the resolve bridge has them recovered by chunking it
(deterministic), the first time a pull could reuse its chunks. No chunk is
stored twice: the blobs are the data, the recipes say where each chunk lies
in them (a few bytes per 64 KiB chunk).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import QwenhomeError
from ..xet.recipe import FileRecipe
from ..xet.reuse import LocalChunks
from .cache import Store, atomic_write

log = logging.getLogger(__name__)

_READ = 8 << 20  # bytes read at a time when chunking a local blob
_RUN_READ = 1 << 20  # ... and a run of chunks whose lengths a recipe lacks (a few chunks past it are chunked too)


class Recipes:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._blobs: dict[str, list[Path]] | None = None

    def save(self, sha256: str, recipe: FileRecipe) -> None:
        """Keep ``recipe`` for the blob ``sha256`` (replacing one that knew less)."""
        atomic_write(self.store.recipe_path(sha256), recipe.dumps().decode())

    def load(self, sha256: str) -> FileRecipe | None:
        path = self.store.recipe_path(sha256)
        try:
            return FileRecipe.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, QwenhomeError) as exc:
            log.debug("recipe %s not read (%s): its chunks are not reused", path, exc)
            return None

    def names(self) -> list[str]:
        """The blobs that have a recipe."""
        try:
            return [n[:-5] for n in os.listdir(self.store.xet_dir / "pulled") if n.endswith(".json")]
        except OSError:
            return []  # none yet

    def blob(self, sha256: str, size: int) -> Path | None:
        """A blob of the home with this name and size."""
        if self._blobs is None:
            self._blobs = self.store.blobs_by_name()  # (once: a pull asks for many)
        for path in self._blobs.get(sha256, ()):
            try:
                if path.stat().st_size == size:
                    return path
            except OSError as exc:
                log.debug("blob %s not usable: %s", path, exc)
        return None

    def local_chunks(self, xorbs: Iterable[str], exclude: Iterable[str] = ()) -> LocalChunks:
        """The chunk index of the home's blobs that hold chunks of ``xorbs``
        (blob paths are the keys). A blob whose recipe lacks its chunk
        lengths is chunked now, and its recipe saved with them."""
        wanted, skip = set(xorbs), set(exclude)
        index = LocalChunks()
        if not wanted:
            return index
        for sha in self.names():
            if sha in skip:
                continue
            recipe = self.load(sha)
            if recipe is None or not wanted & {t.hash for t in recipe.terms}:
                continue
            path = self.blob(sha, recipe.size)
            if path is None:
                continue
            if recipe.chunk_lengths is None:
                recipe = self._with_lengths(sha, recipe, path)
                if recipe is None:
                    continue
            index.add(str(path), recipe)
        return index

    def _with_lengths(self, sha256: str, recipe: FileRecipe, path: Path) -> FileRecipe | None:
        """``recipe`` with its chunk lengths, from chunking the blob at ``path``."""
        try:
            lengths = chunk_file(path) if recipe.some_lengths is None else _complete(path, recipe)
            known = FileRecipe(recipe.file_hash, recipe.size, recipe.terms, tuple(lengths))
        except (OSError, ValueError) as exc:  # (ValueError: lengths that do not fit the terms)
            log.debug("chunks of %s not found (%s): not reused", path, exc)
            return None
        try:
            self.save(sha256, known)
        except QwenhomeError as exc:  # kept in memory for this pull; chunked again next time
            log.debug("recipe of %s not saved: %s", sha256, exc)
        return known


def _complete(path: Path, recipe: FileRecipe) -> list[int]:
    """Every chunk's length, from those ``recipe`` knows and from chunking
    the bytes of each run of unknown ones (a chunk boundary is where the
    chunker's state is reset, so a run chunks alone as in the whole file)."""
    some = recipe.some_lengths or ()
    out: list[int] = []
    offsets = recipe.term_offsets()
    with open(path, "rb") as fh:
        for t, known, start, end in zip(recipe.terms, some, offsets, offsets[1:], strict=False):
            pos, k = start, 0
            while k < len(t.range):
                if known[k]:
                    out.append(known[k])
                    pos += known[k]
                    k += 1
                    continue
                n = k
                while n < len(t.range) and not known[n]:
                    n += 1
                run = _chunk_run(fh, pos, n - k, end)
                out += run
                pos += sum(run)
                k = n
    return out


def _chunk_run(fh: BinaryIO, start: int, count: int, limit: int) -> list[int]:
    """The lengths of the ``count`` chunks from byte ``start`` (a boundary)
    of the file, none past ``limit`` (a term's end: a boundary too)."""
    from ..xet.chunking import Chunker

    ends: list[int] = []
    fh.seek(start)
    with Chunker() as chunker:
        left = limit - start
        while len(ends) < count and left > 0 and (block := fh.read(min(_RUN_READ, left))):
            left -= len(block)
            ends += chunker.update(block)
        if len(ends) < count:
            ends += chunker.finish()
    ends = ends[:count]
    if len(ends) != count:
        raise ValueError(f"{count} chunks expected from byte {start}, {len(ends)} found")
    return [b - a for a, b in zip([0, *ends], ends, strict=False)]


def chunk_file(path: Path) -> list[int]:
    """The lengths of the Xet chunks of the file at ``path``."""
    from ..xet.chunking import Chunker  # (numpy: only for a blob whose recipe lacks them)

    ends: list[int] = []
    with open(path, "rb") as fh, Chunker() as chunker:
        while block := fh.read(_READ):
            ends += chunker.update(block)
        ends += chunker.finish()
    return [b - a for a, b in zip([0, *ends], ends, strict=False)]
