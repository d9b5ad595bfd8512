"""What the mirror computed once per blob to serve it through Xet, kept under ``$QWEN_HOME/qwenhome/xet/``.

For each LFS blob, keyed by its sha256, a **record**: the Xet file hash (equal
to the Hub's: it depends only on the content), the recipe (terms and chunk
lengths), and the layout of the xorbs its new chunks went into. Xorbs are not
stored: their chunks are uncompressed (scheme 0), so a xorb's bytes are, chunk
after chunk, an 8-byte header computed from the chunk's length and the chunk's
bytes read from the blob. The record keeps where each chunk lies in the blob;
no second copy of the data exists.

On disk (written body first, header last, each by rename)::

    files/<sha256>.json     header: size, file hash, the blob's identity, group,
                            the xorbs it owns and the xorbs its recipe uses
    recipes/<sha256>.json   body: the recipe and, per owned xorb, each chunk's
                            hash, length and offset in the blob
    xorbs/<hash>.xorb       with the compression option only: the xorbs, stored
                            (LZ4 / BG4-LZ4 chunks where they are smaller)

Headers are small and all loaded at start; bodies are read when needed and a
few are kept in memory. A record is usable while its blob and the blobs of
every xorb its recipe uses are unchanged on disk (path, size, mtime, inode);
otherwise it is dropped, and the caller builds it again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...xet import FileRecipe, XetAnswerError, XorbInfo, hash_to_hex, hex_to_hash, xorb_hash
from ...xet.builder import ChunkIndex
from ...xet.xorb import HEADER_LEN

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Source:
    """A blob on disk, as it was when its record was built."""

    path: str
    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, path: str) -> Source:
        return cls.from_stat(path, os.stat(path))

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result) -> Source:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)

    def unchanged(self) -> bool:
        try:
            return self.matches(os.stat(self.path))
        except OSError:
            return False

    def to_json(self) -> list[Any]:
        return [self.path, self.size, self.mtime_ns, self.ino]

    @classmethod
    def from_json(cls, raw: Any) -> Source:
        path, size, mtime_ns, ino = raw
        if not (isinstance(path, str) and all(isinstance(n, int) for n in (size, mtime_ns, ino))):
            raise ValueError("bad source")
        return cls(path, size, mtime_ns, ino)


@dataclass(frozen=True)
class Header:
    sha256: str
    size: int
    file_hash: str
    source: Source
    group: str  # the blobs of one group deduplicate against each other (one repository)
    owns: tuple[str, ...]  # xorbs made of this blob's new chunks
    uses: tuple[str, ...]  # every xorb the recipe's terms name

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "sha256": self.sha256, "size": self.size, "file_hash": self.file_hash,
                "source": self.source.to_json(), "group": self.group, "owns": list(self.owns),
                "uses": list(self.uses)}

    @classmethod
    def from_json(cls, o: Any) -> Header:
        if o.get("format") != FORMAT:
            raise ValueError("unknown format")
        owns, uses = tuple(o["owns"]), tuple(o["uses"])
        if not all(isinstance(x, str) for x in owns + uses) or not isinstance(o["group"], str):
            raise ValueError("bad xorb list")
        return cls(str(o["sha256"]), int(o["size"]), str(o["file_hash"]), Source.from_json(o["source"]),
                   o["group"], owns, uses)


@dataclass(frozen=True)
class XorbLayout:
    """Where a xorb's bytes come from.

    Synthesized (the default): its chunks are uncompressed and chunk ``i``'s
    bytes lie in the blob ``source`` at ``blob_offsets[i]``. Stored (the
    mirror's compression option): ``source`` is the serialized xorb itself,
    kept under ``xorbs/``, and ``blob_offsets`` is empty.
    """

    info: XorbInfo
    blob_offsets: tuple[int, ...]
    source: Source

    @property
    def stored(self) -> bool:
        return not self.blob_offsets

    def header(self, i: int) -> bytes:
        """The 8-byte header of chunk ``i`` (version 0, payload = length, scheme 0)."""
        n = self.info.chunk_lengths[i].to_bytes(3, "little")
        return b"\x00" + n + b"\x00" + n


def uncompressed_offsets(lengths: Iterable[int]) -> tuple[int, ...]:
    out = [0]
    for n in lengths:
        out.append(out[-1] + HEADER_LEN + n)
    return tuple(out)


@dataclass(frozen=True)
class Body:
    recipe: FileRecipe
    xorbs: dict[str, XorbLayout]  # the xorbs this blob owns

    def to_json(self) -> dict[str, Any]:
        out = []
        for h, x in self.xorbs.items():
            # Per chunk: hash, length, and its offset in the blob (synthesized) or in the stored xorb.
            where = x.info.offsets[:-1] if x.stored else x.blob_offsets
            rows = [[hash_to_hex(c), n, off] for c, n, off in zip(x.info.chunk_hashes, x.info.chunk_lengths,
                                                                  where, strict=True)]
            entry: dict[str, Any] = {"hash": h, "chunks": rows}
            if x.stored:
                entry["stored"] = {"size": x.info.size, "source": x.source.to_json()}
            out.append(entry)
        return {"format": FORMAT, "recipe": self.recipe.to_json(), "xorbs": out}

    @classmethod
    def from_json(cls, o: Any, source: Source) -> Body:
        if o.get("format") != FORMAT:
            raise ValueError("unknown format")
        recipe = FileRecipe.from_json(o["recipe"])
        xorbs: dict[str, XorbLayout] = {}
        for x in o["xorbs"]:
            rows = x["chunks"]
            hashes = tuple(hex_to_hash(r[0]) for r in rows)
            lengths = tuple(int(r[1]) for r in rows)
            where = tuple(int(r[2]) for r in rows)
            digest = xorb_hash(zip(hashes, lengths, strict=True))
            if hash_to_hex(digest) != x["hash"] or not rows or not all(n > 0 for n in lengths):
                raise ValueError(f"xorb {str(x['hash'])[:16]} does not match its chunks")
            if "stored" in x:
                stored = Source.from_json(x["stored"]["source"])
                offsets = (*where, int(x["stored"]["size"]))
                if offsets[0] != 0 or offsets[-1] != stored.size or any(
                        b - a <= HEADER_LEN for a, b in itertools.pairwise(offsets)):
                    raise ValueError(f"stored xorb {str(x['hash'])[:16]}: bad offsets")
                xorbs[x["hash"]] = XorbLayout(XorbInfo(digest, hashes, lengths, offsets), (), stored)
                continue
            if any(off < 0 or off + n > source.size for n, off in zip(lengths, where, strict=True)):
                raise ValueError(f"xorb {str(x['hash'])[:16]} lies outside its blob")
            info = XorbInfo(digest, hashes, lengths, uncompressed_offsets(lengths))
            xorbs[x["hash"]] = XorbLayout(info, where, source)
        return cls(recipe, xorbs)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


class Records:
    """The records of one mirror: headers in memory, bodies on demand. Thread-safe."""

    def __init__(self, folder: Path, *, cache_size: int = 16, recheck: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self._files, self._recipes = folder / "files", folder / "recipes"
        self.xorbs_folder = folder / "xorbs"  # stored (compressed) xorbs, with the compression option
        self._lock = threading.Lock()
        self._headers: dict[str, Header] = {}
        self._by_file_hash: dict[str, str] = {}
        self._owner: dict[str, str] = {}  # xorb hex -> sha256 of the blob that owns it
        self._bodies: OrderedDict[str, Body] = OrderedDict()
        self._cache_size = cache_size
        self._checked: dict[str, float] = {}  # sha256 -> when it was last found usable
        self._recheck = recheck
        self._clock = clock

    def load(self) -> int:
        """Read every header on disk; returns how many were loaded (bad ones are removed)."""
        try:
            names = sorted(p.name for p in self._files.iterdir() if p.suffix == ".json")
        except OSError:
            return 0
        for name in names:
            path = self._files / name
            try:
                header = Header.from_json(json.loads(path.read_text(encoding="utf-8")))
                if header.sha256 + ".json" != name or not (self._recipes / name).is_file():
                    raise ValueError("misnamed or bodiless record")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.debug("xet record %s dropped: %s", name, exc)
                self._remove_files(name[:-5])
                continue
            self._index(header)
        return len(self._headers)

    def _index(self, header: Header) -> None:
        with self._lock:
            self._headers[header.sha256] = header
            self._by_file_hash[header.file_hash] = header.sha256
            for x in header.owns:
                self._owner[x] = header.sha256

    # -- reading -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._headers)

    def headers(self) -> list[Header]:
        with self._lock:
            return list(self._headers.values())

    def sha_of_file_hash(self, file_hash: str) -> str | None:
        return self._by_file_hash.get(file_hash)

    def usable(self, sha256: str) -> Header | None:
        """The header of a record whose blobs are all unchanged, else None (and the record is dropped)."""
        header = self._headers.get(sha256)
        if header is None:
            return None
        now = self._clock()
        if now - self._checked.get(sha256, -1e18) <= self._recheck:
            return header
        owners = {self._owner.get(x) for x in header.uses}
        if None in owners:
            self.drop(sha256)
            return None
        for owner in owners | {sha256}:
            h = self._headers.get(owner or "")
            if h is None or not h.source.unchanged():
                log.info("xet: blob %s changed or vanished; its Xet records are dropped", (owner or "?")[:16])
                self.drop(owner or sha256)
                if owner != sha256:
                    self.drop(sha256)
                return None
        self._checked[sha256] = now
        return header

    def body(self, sha256: str) -> Body | None:
        with self._lock:
            hit = self._bodies.get(sha256)
            if hit is not None:
                self._bodies.move_to_end(sha256)
                return hit
            header = self._headers.get(sha256)
        if header is None:
            return None
        try:
            raw = json.loads((self._recipes / f"{sha256}.json").read_text(encoding="utf-8"))
            body = Body.from_json(raw, header.source)
            if body.recipe.file_hash != header.file_hash or body.recipe.size != header.size:
                raise ValueError("body does not match its header")
        except (OSError, ValueError, KeyError, TypeError, IndexError, XetAnswerError) as exc:
            log.warning("xet record of blob %s is unreadable (%s); it is built again", sha256[:16], exc)
            self.drop(sha256)
            return None
        with self._lock:
            self._bodies[sha256] = body
            while len(self._bodies) > self._cache_size:
                self._bodies.popitem(last=False)
        return body

    def xorb(self, xorb: str) -> XorbLayout | None:
        owner = self._owner.get(xorb)
        body = self.body(owner) if owner is not None else None
        return body.xorbs.get(xorb) if body is not None else None

    def chunk_index(self, group: str) -> ChunkIndex:
        """Where each chunk of the group's records lies: what a new blob of the group reuses."""
        index: ChunkIndex = {}
        for header in self.headers():
            if header.group == group and self.usable(header.sha256) is not None:
                body = self.body(header.sha256)
                for h, x in (body.xorbs.items() if body is not None else ()):
                    for i, c in enumerate(x.info.chunk_hashes):
                        index.setdefault(c, (h, i))
        return index

    # -- writing -----------------------------------------------------------------
    def add(self, header: Header, body: Body) -> None:
        _write_json(self._recipes / f"{header.sha256}.json", body.to_json())
        _write_json(self._files / f"{header.sha256}.json", header.to_json())
        self._index(header)
        with self._lock:
            self._bodies[header.sha256] = body
            while len(self._bodies) > self._cache_size:
                self._bodies.popitem(last=False)

    def drop(self, sha256: str) -> None:
        with self._lock:
            header = self._headers.pop(sha256, None)
            self._bodies.pop(sha256, None)
            self._checked.pop(sha256, None)
            if header is not None:
                if self._by_file_hash.get(header.file_hash) == sha256:
                    del self._by_file_hash[header.file_hash]
                for x in header.owns:
                    if self._owner.get(x) == sha256:
                        del self._owner[x]
        self._remove_files(sha256)

    def _remove_files(self, sha256: str) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # its stored xorbs, if any
            for x in json.loads((self._recipes / f"{sha256}.json").read_text(encoding="utf-8"))["xorbs"]:
                if "stored" in x and re.fullmatch(r"[0-9a-f]{64}", x["hash"]):
                    (self.xorbs_folder / f"{x['hash']}.xorb").unlink(missing_ok=True)
        for folder in (self._files, self._recipes):
            with contextlib.suppress(OSError):
                (folder / f"{sha256}.json").unlink()
