"""Turn a local file into what a Xet CAS stores and serves (what an uploader does).

:func:`build_file` chunks a file, hashes every chunk, and places each chunk:

- a chunk already known (in ``known``, e.g. the xorbs of an earlier revision)
  is referred to where it is, and nothing is stored again (the Hub's
  deduplication, which makes an updated revision point at the old xorbs for
  its unchanged chunks);
- a chunk seen earlier in the same file is referred to where it was put;
- any other chunk is compressed and packed into a new xorb (64 MiB, 8192
  chunks at most); each finished xorb is handed to ``on_xorb`` at once, so
  memory stays bounded by one xorb.

It returns the file's Xet hash, its sha256, its recipe (the terms, coalesced
from consecutive chunks of one xorb) and the indexes of the new xorbs. The new
chunks are added to ``known`` as they are placed, so building the next file
with the same index deduplicates against this one too.

Unlike the reference uploader, no short run is stored again to keep terms
long: reuse is maximal, and a recipe may hold many short terms.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .chunking import READ_BLOCK, iter_chunks, iter_sized
from .compression import Policy
from .hashes import chunk_hash, file_hash, hash_to_hex
from .recipe import FileRecipe, coalesce
from .xorb import MAX_XORB_BYTES, MAX_XORB_CHUNKS, Xorb, XorbBuilder, XorbInfo, encode_chunk

# chunk hash (raw 32 bytes) -> (xorb hash hex, chunk index in that xorb)
ChunkIndex = MutableMapping[bytes, tuple[str, int]]


def index_xorbs(infos: list[XorbInfo], index: ChunkIndex | None = None) -> ChunkIndex:
    """A chunk index of these xorbs (the first place of each chunk wins)."""
    out: ChunkIndex = {} if index is None else index
    for info in infos:
        for i, h in enumerate(info.chunk_hashes):
            out.setdefault(h, (info.hex, i))
    return out


@dataclass(frozen=True)
class BuiltFile:
    recipe: FileRecipe
    sha256: str
    new_xorbs: list[XorbInfo] = field(repr=False)
    reused_chunks: int  # chunks referred to in xorbs that existed before this file
    new_chunks: int  # chunks stored in this file's new xorbs

    @property
    def file_hash(self) -> str:
        return self.recipe.file_hash

    @property
    def size(self) -> int:
        return self.recipe.size


class _Packer:
    """The xorb being filled; a chunk placed in it is named by (slot, index) until the xorb is done."""

    def __init__(self, policy: Policy, on_xorb: Callable[[Xorb], None], max_bytes: int, max_chunks: int,
                 keep_data: bool) -> None:
        self.policy = policy
        self.on_xorb = on_xorb
        self.max_bytes, self.max_chunks, self.keep_data = max_bytes, max_chunks, keep_data
        self.builder = self._new()
        self.slot = 0
        self.done: dict[int, XorbInfo] = {}  # slot -> info of the finished xorb

    def _new(self) -> XorbBuilder:
        return XorbBuilder(max_bytes=self.max_bytes, max_chunks=self.max_chunks, keep_data=self.keep_data)

    def add(self, data: bytes | memoryview, digest: bytes) -> tuple[int, int]:
        chunk = encode_chunk(data, self.policy, digest)
        if not self.builder.fits(chunk):
            self.flush()
        return self.slot, self.builder.add(chunk)

    def flush(self) -> None:
        if len(self.builder):
            xorb = self.builder.finish()
            self.done[self.slot] = xorb.info
            self.on_xorb(xorb)
            self.slot += 1
            self.builder = self._new()


def build_stream(stream: BinaryIO, on_xorb: Callable[[Xorb], None], *, known: ChunkIndex | None = None,
                 policy: Policy = Policy.LZ4, threads: int = 1, max_xorb_bytes: int = MAX_XORB_BYTES,
                 max_xorb_chunks: int = MAX_XORB_CHUNKS, block_size: int = READ_BLOCK,
                 keep_xorb_data: bool = True, chunk_lengths: Sequence[int] | None = None) -> BuiltFile:
    """Build a file read from ``stream`` (see the module docstring).

    With ``keep_xorb_data=False`` the xorbs handed to ``on_xorb`` carry their
    layout only (empty ``data``), and memory stays at one read block. With
    ``chunk_lengths`` (the boundaries a recipe of the file gives) the file is
    cut there instead of chunked: the caller checks the resulting file hash
    against the recipe's (other boundaries give another hash). ValueError: the
    file's size is not what the lengths add up to.
    """
    index: ChunkIndex = {} if known is None else known
    packer = _Packer(policy, on_xorb, max_xorb_bytes, max_xorb_chunks, keep_xorb_data)
    sha = hashlib.sha256()
    pairs: list[tuple[bytes, int]] = []
    # Per chunk: (xorb hex, index) when it exists already, or (slot, index) in a new xorb.
    placed: list[tuple[str | int, int, int]] = []
    pending: dict[bytes, tuple[int, int]] = {}  # chunks of this file in new xorbs, by hash
    reused = new = 0
    chunks = iter_chunks(stream, threads=threads, block_size=block_size) if chunk_lengths is None \
        else iter_sized(stream, chunk_lengths, block_size=block_size)
    for data in chunks:
        sha.update(data)
        digest = chunk_hash(data)
        pairs.append((digest, len(data)))
        where: tuple[str | int, int] | None = index.get(digest) or pending.get(digest)
        if where is None:
            where = packer.add(data, digest)
            pending[digest] = where
            new += 1
        elif isinstance(where[0], str):
            reused += 1
        placed.append((where[0], where[1], len(data)))
    packer.flush()

    new_xorbs = [packer.done[s] for s in sorted(packer.done)]
    for digest, (slot, i) in pending.items():
        index.setdefault(digest, (packer.done[slot].hex, i))
    resolved = [(x if isinstance(x, str) else packer.done[x].hex, i, n) for x, i, n in placed]
    recipe = FileRecipe(hash_to_hex(file_hash(pairs)), sum(n for _, n in pairs), tuple(coalesce(resolved)),
                        tuple(n for _, n in pairs))
    return BuiltFile(recipe, sha.hexdigest(), new_xorbs, reused, new)


def build_file(path: str | Path, on_xorb: Callable[[Xorb], None], *, known: ChunkIndex | None = None,
               policy: Policy = Policy.LZ4, threads: int = 1) -> BuiltFile:
    """Build the file at ``path`` (see :func:`build_stream`)."""
    with open(path, "rb") as f:
        return build_stream(f, on_xorb, known=known, policy=policy, threads=threads)


def xorb_folder_writer(folder: str | Path) -> Callable[[Xorb], None]:
    """An ``on_xorb`` that writes each xorb to ``folder/<hash hex>.xorb`` (temp file, then rename)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)

    def write(xorb: Xorb) -> None:
        final = root / f"{xorb.info.hex}.xorb"
        if final.exists():  # content-addressed: the same name is the same bytes
            return
        with tempfile.NamedTemporaryFile(dir=root, prefix=f".{xorb.info.hex}.", delete=False) as tmp:
            tmp.write(xorb.data)
        Path(tmp.name).replace(final)

    return write
