"""Incremental verification of a file as its written prefix grows."""

from __future__ import annotations

import hashlib
from typing import Any


class Verifier:
    """sha256 of the content, or the git blob oid (sha1 over ``blob <size>\\0`` + content)."""

    def __init__(self, size: int, sha256: str | None, blob_id: str | None) -> None:
        self.size = size
        self.expected = sha256 or blob_id or ""
        self.algorithm = "sha256" if sha256 else "git-sha1"
        self._h: Any = hashlib.sha256() if sha256 else hashlib.sha1(b"blob %d\0" % size)
        self.hashed = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.hashed += len(data)

    def hexdigest(self) -> str:
        return str(self._h.hexdigest())

    def ok(self) -> bool:
        return self.hashed == self.size and self.hexdigest() == self.expected
