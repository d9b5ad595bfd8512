"""Where a mirror's repositories come from.

* :class:`StoreBackend` serves a hub cache (:mod:`qwenhome.store.layout`) as
  written by huggingface_hub or qwenhome; blob names already are the hashes.
* :class:`FolderBackend` serves plain folders ``ROOT/Org/Name/...`` (datasets under
  ``ROOT/datasets/Org/Name``), hashing each file once (see :mod:`.hashing`).

Both only ever list files whose real path is inside their root; the server
checks again before it opens anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..errors import QwenhomeError, RepoNotFoundError, RevisionNotFoundError, UsageError
from ..repo.ref import (
    DEFAULT_REVISION,
    RepoRef,
    etag_kind,
    is_commit,
    validate_relpath,
    validate_revision,
)
from ..store.cache import Store
from ..store.layout import HubCache
from .catalog import FileEntry, Snapshot, is_lfs_name
from .hashing import HashCache

log = logging.getLogger(__name__)

# Folders that are never part of a repository's content.
_SKIP_DIRS = frozenset({".git", ".cache", ".huggingface", ".no_exist"})


class Backend(Protocol):
    """What the server needs from a source of repositories."""

    @property
    def root(self) -> Path:
        """Every served file's real path is inside this (resolved) folder."""
        ...

    def snapshot(self, repo_type: str, repo_id: str, revision: str) -> Snapshot:
        """The repository at ``revision``; raises RepoNotFoundError / RevisionNotFoundError."""
        ...

    def repos(self) -> list[tuple[str, str]]:
        """``(repo_type, repo_id)`` of every repository served, sorted."""
        ...

    def revisions(self, repo_type: str, repo_id: str) -> list[str]:
        """The revisions served of one repository, oldest first."""
        ...


def repo_ref(repo_type: str, repo_id: str) -> RepoRef:
    """A validated reference, or RepoNotFoundError for names that cannot exist."""
    try:
        ref = RepoRef.parse(repo_id, repo_type)
    except UsageError:
        raise RepoNotFoundError(f"repository {repo_id!r} not found", repo=repo_id) from None
    if ref.repo_id != repo_id or ref.repo_type != repo_type:
        raise RepoNotFoundError(f"repository {repo_id!r} not found", repo=repo_id)
    return ref


def check_revision(revision: str) -> str:
    try:
        return validate_revision(revision)
    except UsageError:
        raise RevisionNotFoundError(f"invalid revision {revision!r}", revision=revision) from None


def inside(path: str, root: str) -> bool:
    """Whether the real path ``path`` is ``root`` or below it (both resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _TTLCache:
    """Time-bounded memo of snapshots, so range requests do no disk scans.

    When an entry is stale, one caller rescans while the others keep using the
    stale value for that moment (no herd of identical scans under load).
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self._clock = clock
        self._data: dict[object, tuple[float, Snapshot]] = {}
        self._refreshing: dict[object, threading.Lock] = {}
        self._lock = threading.Lock()

    def get_or_compute(self, key: object, compute: Callable[[], Snapshot]) -> Snapshot:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and self._clock() - hit[0] <= self.ttl:
                return hit[1]
            refresh = self._refreshing.setdefault(key, threading.Lock())
        if hit is not None and not refresh.acquire(blocking=False):
            return hit[1]
        if hit is None:
            refresh.acquire()  # nothing to serve yet: wait for the one scan
        try:
            with self._lock:
                again = self._data.get(key)
            if again is not None and again is not hit and self._clock() - again[0] <= self.ttl:
                return again[1]
            value = compute()
            with self._lock:
                if len(self._data) > 4096:
                    self._data.clear()
                self._data[key] = (self._clock(), value)
            return value
        finally:
            refresh.release()


def _walk_files(top: Path, root_real: str) -> list[tuple[str, str, os.stat_result]]:
    """(relative path, real path, stat) for regular files under ``top`` whose
    real path stays inside ``root_real``; symlinked folders are not followed.

    Rescans run every few seconds, so this avoids ``realpath`` per file: a real
    sub-folder's real path is its parent's plus its name, and a link into a
    folder already proven real (a store's blobs folder) costs one ``lstat``.
    """
    top_real = os.path.realpath(top)
    if not inside(top_real, root_real) or not os.path.isdir(top_real):
        return []
    real_dirs: dict[str, bool] = {}

    def is_real_dir(d: str) -> bool:
        if d not in real_dirs:
            real_dirs[d] = os.path.realpath(d) == d and inside(d, root_real)
        return real_dirs[d]

    out: list[tuple[str, str, os.stat_result]] = []
    stack = [("", top_real)]
    while stack:
        rel_dir, real_dir = stack.pop()
        try:
            entries = list(os.scandir(real_dir))
        except OSError as exc:
            log.debug("folder %s not listed: %s", real_dir, exc)
            continue
        for e in entries:
            rel = rel_dir + e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    if e.name not in _SKIP_DIRS:
                        stack.append((rel + "/", os.path.join(real_dir, e.name)))
                    continue
                if e.is_symlink():
                    hop = os.path.normpath(os.path.join(real_dir, os.readlink(e.path)))
                    st = os.lstat(hop)
                    if stat.S_ISREG(st.st_mode) and is_real_dir(os.path.dirname(hop)):
                        real = hop
                    else:
                        real = os.path.realpath(e.path)
                        st = os.stat(real)
                else:
                    real = os.path.join(real_dir, e.name)
                    st = e.stat(follow_symlinks=False)
            except OSError as exc:  # dangling link (an unfinished download) or vanished file
                log.debug("%s not served: %s", e.path, exc)
                continue
            if not stat.S_ISREG(st.st_mode) or not inside(real, root_real):
                continue
            try:
                validate_relpath(rel)
            except QwenhomeError as exc:
                log.debug("%s not served: %s", e.path, exc.message)
                continue
            out.append((rel, real, st))
    return out


def _subdirs(folder: Path) -> list[Path]:
    """Real sub-folders (no symlinks, no dot-folders) of ``folder``; empty if unreadable."""
    try:
        return sorted(Path(e.path) for e in os.scandir(folder)
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except OSError as exc:
        log.debug("folder %s not listed: %s", folder, exc)
        return []


class StoreBackend:
    """Serves a Hugging Face hub cache folder read-only.

    With qwenhome's ``state_dir``, a snapshot that a pull has not finished is
    listed whole (from its manifest) and its missing files answer 404
    ``EntryNotFound``, so clients fail or fetch them elsewhere instead of taking
    a partial snapshot for a complete one.
    """

    def __init__(
        self, hub_cache: Path, *, state_dir: Path | None = None, hashes: HashCache | None = None,
        ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = Path(os.path.realpath(hub_cache))
        # With qwenhome's state: the Store, whose manifests say what a snapshot should hold.
        self._store = Store(self._root, state_dir) if state_dir is not None else None
        self._hub = self._store or HubCache(self._root)
        self._hashes = hashes or HashCache()
        self._cache = _TTLCache(ttl, clock)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def store(self) -> Store | None:
        """qwenhome's store of this hub cache, when the mirror was given its state."""
        return self._store

    def snapshot(self, repo_type: str, repo_id: str, revision: str) -> Snapshot:
        ref = repo_ref(repo_type, repo_id)
        check_revision(revision)
        return self._cache.get_or_compute((repo_type, repo_id, revision), lambda: self._load(ref, revision))

    def _load(self, ref: RepoRef, revision: str) -> Snapshot:
        if not self._hub.has_repo(ref):
            raise RepoNotFoundError(f"repository {ref.repo_id!r} not found", repo=ref.repo_id)
        commit = self._resolve(ref, revision)
        return self._scan(ref, commit)

    def repos(self) -> list[tuple[str, str]]:
        out = []
        for ref, path in self._hub.repos():
            if ref.repo_type in ("model", "dataset") and path.is_dir() and not path.is_symlink():
                out.append((ref.repo_type, ref.repo_id))
        return sorted(out)

    def revisions(self, repo_type: str, repo_id: str) -> list[str]:
        """The commits that have a snapshot, oldest first (by their folder's time)."""
        ref = repo_ref(repo_type, repo_id)

        def age(commit: str) -> float:
            try:
                return self._hub.snapshot_dir(ref, commit).stat().st_mtime
            except OSError:
                return 0.0

        return sorted(self._hub.commits(ref), key=lambda c: (age(c), c))

    def _resolve(self, ref: RepoRef, revision: str) -> str:
        hub = self._hub
        if is_commit(revision) and hub.has_snapshot(ref, revision):
            return revision
        commit = hub.read_ref(ref, revision)
        if commit is None or not hub.has_snapshot(ref, commit):
            raise RevisionNotFoundError(f"revision {revision!r} not found", revision=revision)
        return commit

    def _scan(self, ref: RepoRef, commit: str) -> Snapshot:
        hub = self._hub
        snap_dir = hub.snapshot_dir(ref, commit)
        repo_real = os.path.realpath(hub.repo_dir(ref))
        if not inside(repo_real, str(self._root)):
            raise RepoNotFoundError(f"repository {ref.repo_id!r} not found", repo=ref.repo_id)
        files: dict[str, FileEntry] = {}
        newest = 0.0
        # Blobs may live anywhere in the store: huggingface_hub's shared Xet blobs are
        # links from the repository's blobs to the cache's own blobs by Xet hash.
        for rel, real, st in _walk_files(snap_dir, str(self._root)):
            newest = max(newest, st.st_mtime)
            etag = hub.linked_blob(ref, snap_dir / rel)
            kind = etag_kind(etag) if etag else None
            if etag and kind == "sha256":
                files[rel] = FileEntry.lfs(rel, st.st_size, etag, real)
            elif etag and kind == "git-sha1":
                files[rel] = FileEntry(rel, st.st_size, etag, None, real)
            else:  # a plain copy (no symlinks): hash it like a folder repo
                files[rel] = _hashed_entry(self._hashes, rel, real, st)
        self._hashes.save()
        manifest = self._store.load_manifest(ref, commit) if self._store is not None else None
        for f in manifest.files if manifest is not None else ():
            if f.path not in files:  # listed, not (yet) here: served as EntryNotFound
                files[f.path] = (FileEntry.lfs(f.path, f.size, f.sha256, "") if f.sha256 and not f.blob_id
                                 else FileEntry(f.path, f.size, f.blob_id or "", f.sha256, ""))
        return Snapshot.build(ref.repo_type, ref.repo_id, files, newest, commit=commit)


def _hashed_entry(hashes: HashCache, rel: str, real: str, st: os.stat_result) -> FileEntry:
    if is_lfs_name(rel, st.st_size):
        sha = hashes.get(real, st, git=False, sha256=True).sha256
        assert sha is not None
        return FileEntry.lfs(rel, st.st_size, sha, real)
    oid = hashes.get(real, st, git=True, sha256=False).git_oid
    assert oid is not None
    return FileEntry(rel, st.st_size, oid, None, real)


class FolderBackend:
    """Serves plain repository folders: ``ROOT/Org/Name`` and ``ROOT/datasets/Org/Name``.

    The only branch is ``main``; its commit id is derived from the file tree, so
    it changes when a file changes. Recently seen commits stay addressable.
    """

    def __init__(
        self, root: Path, *, hashes: HashCache | None = None, ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = Path(os.path.realpath(root))
        self._hashes = hashes or HashCache()
        self._cache = _TTLCache(ttl, clock)
        self._commits: dict[tuple[str, str, str], Snapshot] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        ref = repo_ref(repo_type, repo_id)
        base = self._root / "datasets" if ref.repo_type == "dataset" else self._root
        if ref.repo_type not in ("model", "dataset"):
            raise RepoNotFoundError(f"repository {repo_id!r} not found", repo=repo_id)
        return base / ref.repo_id

    def snapshot(self, repo_type: str, repo_id: str, revision: str) -> Snapshot:
        check_revision(revision)
        key = (repo_type, repo_id, revision)
        with self._lock:
            known = self._commits.get(key)
        if known is not None:
            return known
        head = self._head(repo_type, repo_id)
        if revision in (DEFAULT_REVISION, head.commit):
            return head
        raise RevisionNotFoundError(f"revision {revision!r} not found", revision=revision)

    def revisions(self, repo_type: str, repo_id: str) -> list[str]:
        """Plain folders have one revision."""
        return [DEFAULT_REVISION]

    def repos(self) -> list[tuple[str, str]]:
        out = []
        for repo_type, base in (("model", self._root), ("dataset", self._root / "datasets")):
            for org in _subdirs(base):
                if repo_type == "model" and org.name == "datasets":
                    continue
                for name in _subdirs(org):
                    with contextlib.suppress(QwenhomeError):
                        out.append((repo_type, repo_ref(repo_type, f"{org.name}/{name.name}").repo_id))
        return sorted(out)

    def _head(self, repo_type: str, repo_id: str) -> Snapshot:
        return self._cache.get_or_compute((repo_type, repo_id), lambda: self._scan(repo_type, repo_id))

    def _scan(self, repo_type: str, repo_id: str) -> Snapshot:
        top = self.repo_dir(repo_type, repo_id)
        real_top = os.path.realpath(top)
        if not top.is_dir() or not inside(real_top, str(self._root)):
            raise RepoNotFoundError(f"repository {repo_id!r} not found", repo=repo_id)
        files: dict[str, FileEntry] = {}
        newest = 0.0
        for rel, real, st in _walk_files(top, str(self._root)):
            newest = max(newest, st.st_mtime)
            files[rel] = _hashed_entry(self._hashes, rel, real, st)
        self._hashes.save()
        snap = Snapshot.build(repo_type, repo_id, files, newest)
        with self._lock:
            if len(self._commits) > 256:
                self._commits.clear()
            self._commits[(repo_type, repo_id, snap.commit)] = snap
        return snap
