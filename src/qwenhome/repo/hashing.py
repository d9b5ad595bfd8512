"""The hashes that name and verify content: sha256 (LFS files, ModelScope) and
the git blob oid (sha1 over ``blob <size>\\0`` + content, the Hub's small files).

:class:`Verifier` checks a file as its written prefix grows (a transfer feeds
it in order, so no byte is read twice); :func:`hash_file` hashes a whole file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 4 << 20


def git_blob_header(size: int) -> bytes:
    """What git hashes before a blob's content."""
    return b"blob %d\x00" % size


def new_hash(kind: str, size: int) -> Any:
    """A fresh hash object for ``kind`` (``sha256`` or ``git-sha1``) of ``size`` bytes."""
    return hashlib.sha256() if kind == "sha256" else hashlib.sha1(git_blob_header(size))


class Verifier:
    """sha256 of the content, or the git blob oid (sha1 over ``blob <size>\\0`` + content)."""

    def __init__(self, size: int, sha256: str | None, blob_id: str | None) -> None:
        self.size = size
        self.expected = sha256 or blob_id or ""
        self.algorithm = "sha256" if sha256 else "git-sha1"
        self._h: Any = new_hash(self.algorithm, size)
        self.hashed = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.hashed += len(data)

    def hexdigest(self) -> str:
        return str(self._h.hexdigest())

    def ok(self) -> bool:
        return self.hashed == self.size and self.hexdigest() == self.expected


def hash_file(path: Path, kind: str) -> str:
    """The ``kind`` (``sha256`` or ``git-sha1``) hash of the file at ``path``."""
    size = path.stat().st_size
    h = new_hash(kind, size)
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(mv):
            h.update(mv[:n])
    return str(h.hexdigest())
