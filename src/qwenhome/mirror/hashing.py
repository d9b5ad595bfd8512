"""Content hashes of served files, computed once per (path, size, mtime, inode).

Hashing a 1 GB file takes about a second per pass, so results are kept in
memory and, when a cache file is given, on disk across restarts. Concurrent
requests for the same file wait for one hashing pass instead of repeating it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..repo.hashing import git_blob_header

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileHashes:
    git_oid: str | None
    sha256: str | None


def hash_file(path: str | os.PathLike[str], size: int, *, git: bool, sha256: bool) -> FileHashes:
    """One read pass computing the requested hashes of a file of ``size`` bytes."""
    g = hashlib.sha1(git_blob_header(size)) if git else None
    s = hashlib.sha256() if sha256 else None
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            if g is not None:
                g.update(view[:n])
            if s is not None:
                s.update(view[:n])
    return FileHashes(g.hexdigest() if g else None, s.hexdigest() if s else None)


class HashCache:
    """Thread-safe memo of file hashes keyed by the file's identity on disk."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self._file = cache_file
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}
        self._memo: dict[str, dict[str, str | None]] = {}
        self._dirty = False
        self.computed = 0  # hashing passes done; tests use it to prove caching
        if cache_file is not None:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(cache_file.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._memo = {k: v for k, v in data.items() if isinstance(v, dict)}

    @staticmethod
    def _key(path: str | os.PathLike[str], st: os.stat_result) -> str:
        return f"{os.fspath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def get(self, path: str | os.PathLike[str], st: os.stat_result, *, git: bool, sha256: bool) -> FileHashes:
        """Hashes of the file at ``path`` whose ``os.stat`` is ``st``, computed at most once."""
        key = self._key(path, st)
        with self._lock:
            hit = self._lookup(key, git, sha256)
            if hit is not None:
                return hit
            file_lock = self._inflight.setdefault(key, threading.Lock())
        with file_lock:
            with self._lock:
                hit = self._lookup(key, git, sha256)
            if hit is not None:
                return hit
            result = hash_file(path, st.st_size, git=git, sha256=sha256)
            with self._lock:
                entry = self._memo.setdefault(key, {})
                if result.git_oid:
                    entry["git"] = result.git_oid
                if result.sha256:
                    entry["sha256"] = result.sha256
                self._inflight.pop(key, None)
                self.computed += 1
                self._dirty = True
                found = self._lookup(key, git, sha256)
        assert found is not None
        return found

    def _lookup(self, key: str, git: bool, sha256: bool) -> FileHashes | None:
        entry = self._memo.get(key)
        if entry is None or (git and not entry.get("git")) or (sha256 and not entry.get("sha256")):
            return None
        return FileHashes(entry.get("git"), entry.get("sha256"))

    def save(self) -> None:
        """Write the memo to the cache file (atomically); a no-op without one."""
        if self._file is None:
            return
        with self._lock:
            if not self._dirty:
                return
            text = json.dumps(self._memo)
            self._dirty = False
        with contextlib.suppress(OSError):
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self._file)
