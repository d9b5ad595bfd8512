"""The Hugging Face hub cache layout, and read-only queries over it.

    hub/models--Org--Name/
        blobs/<etag>                       sha256 (LFS) or git blob sha1 (small files)
        snapshots/<commit>/<path>          relative symlink to ../../blobs/<etag>
        refs/<revision>                    text file holding the commit

This module is the only one that spells that layout. :class:`HubCache` answers
questions about any folder laid out so (the home's store, or another tool's
cache being adopted); :class:`~.cache.Store` is one with qwenhome's state
beside it, and is the one that writes.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreError, UsageError
from ..repo.ref import (
    PLURAL_TYPE,
    TYPE_PLURAL,
    RepoRef,
    is_commit,
    validate_etag,
    validate_revision,
)

log = logging.getLogger(__name__)

BLOBS = "blobs"
SNAPSHOTS = "snapshots"
REFS = "refs"


def folder_name(ref: RepoRef) -> str:
    """``models--Org--Name``: the folder of ``ref`` in a hub cache."""
    return f"{TYPE_PLURAL[ref.repo_type]}--{ref.repo_id.replace('/', '--')}"


def parse_folder_name(name: str) -> RepoRef | None:
    """Inverse of :func:`folder_name`; None for foreign folders."""
    head, sep, rest = name.partition("--")
    if not sep or head not in PLURAL_TYPE or "--" not in rest:
        return None
    org, _, repo = rest.partition("--")
    try:
        return RepoRef.parse(f"{org}/{repo}", PLURAL_TYPE[head])
    except UsageError:
        return None


def link_target(relpath: str, etag: str) -> str:
    """What ``snapshots/<commit>/<relpath>`` links to: ``../../blobs/<etag>``
    with one more ``../`` per folder of ``relpath`` (a validated path: no
    empty, ``.`` or ``..`` parts). Computed rather than with os.path.relpath:
    a pull links hundreds of files."""
    return "../" * (relpath.count("/") + 2) + f"{BLOBS}/{etag}"


class HubCache:
    """Paths and read-only queries of a folder in the hub cache layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blob_dirs: dict[str, str] = {}  # repository folder name -> its blobs/ as a string

    # -- paths -------------------------------------------------------------
    def repo_dir(self, ref: RepoRef) -> Path:
        return self.root / folder_name(ref)

    def blobs_dir(self, ref: RepoRef) -> Path:
        return self.repo_dir(ref) / BLOBS

    def blob_path(self, ref: RepoRef, etag: str) -> Path:
        return self.blobs_dir(ref) / validate_etag(etag)

    def snapshots_dir(self, ref: RepoRef) -> Path:
        return self.repo_dir(ref) / SNAPSHOTS

    def snapshot_dir(self, ref: RepoRef, commit: str) -> Path:
        if not is_commit(commit):
            raise StoreError(f"not a commit id: {commit!r}", code="invalid-revision")
        return self.snapshots_dir(ref) / commit

    def refs_dir(self, ref: RepoRef) -> Path:
        return self.repo_dir(ref) / REFS

    def ref_path(self, ref: RepoRef, name: str) -> Path:
        return self.refs_dir(ref) / validate_revision(name)

    # -- repositories ------------------------------------------------------
    def repos(self) -> list[tuple[RepoRef, Path]]:
        """Every entry of the cache named like a repository folder, sorted by
        name; the caller decides whether a symlinked one counts."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []  # an empty home
        except OSError as exc:
            log.debug("no repositories listed in %s: %s", self.root, exc)
            return []
        out = []
        for name in names:
            ref = parse_folder_name(name)
            if ref is not None:
                out.append((ref, self.root / name))
        return out

    def has_repo(self, ref: RepoRef) -> bool:
        """Whether ``ref`` has a snapshots folder (what makes it a repository here)."""
        return self.snapshots_dir(ref).is_dir()

    def commits(self, ref: RepoRef) -> list[str]:
        """The commits that have a snapshot folder, sorted."""
        try:
            entries = sorted(os.scandir(self.snapshots_dir(ref)), key=lambda e: e.name)
        except OSError:
            return []  # no snapshots folder: no commit (not worth a line)
        return [e.name for e in entries if is_commit(e.name) and e.is_dir()]

    def has_snapshot(self, ref: RepoRef, commit: str) -> bool:
        """Whether the snapshot folder of ``commit`` exists (complete or not)."""
        return self.snapshot_dir(ref, commit).is_dir()

    # -- refs --------------------------------------------------------------
    def read_ref(self, ref: RepoRef, name: str) -> str | None:
        try:
            commit = self.ref_path(ref, name).read_text(encoding="utf-8").strip()
        except OSError:
            return None  # no such ref: the usual answer, not worth a line
        return commit if is_commit(commit) else None

    def refs(self, ref: RepoRef) -> dict[str, str]:
        """Every ref of ``ref``: name (``main``, ``refs/pr/1``) -> what its file
        holds, stripped. Only regular files count: a link could lead anywhere."""
        refs_dir = self.refs_dir(ref)
        out: dict[str, str] = {}
        if not refs_dir.is_dir():
            return out
        for path in sorted(refs_dir.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="replace").strip()
            except OSError as exc:
                log.debug("ref %s not read: %s", path, exc)
                continue
            out[path.relative_to(refs_dir).as_posix()] = text
        return dict(sorted(out.items()))

    def resolve_commit(self, ref: RepoRef) -> str | None:
        """The commit a local revision points to, without any network."""
        rev = ref.rev
        if is_commit(rev):
            return rev if self.snapshot_dir(ref, rev).is_dir() else None
        return self.read_ref(ref, rev)

    # -- blobs -------------------------------------------------------------
    def has_blob(self, ref: RepoRef, etag: str, size: int | None = None) -> bool:
        """Whether the blob ``etag`` of ``ref`` is a file here (of ``size`` bytes, when given)."""
        # Strings, not Path: a pull asks this twice per file before its first
        # byte, and each Path join costs more than the stat.
        key = folder_name(ref)
        blobs = self._blob_dirs.get(key)
        if blobs is None:
            blobs = self._blob_dirs[key] = os.path.join(self.root, key, BLOBS)
        try:
            st = os.stat(os.path.join(blobs, validate_etag(etag)))
        except OSError:
            return False  # absent: the answer, not a failure
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def blob_files(self, ref: RepoRef) -> list[Path]:
        """Every file in the blobs folder of ``ref`` (temporary ones included), sorted."""
        blobs = self.blobs_dir(ref)
        try:
            entries = sorted(blobs.iterdir())
        except OSError:
            return []  # no blobs folder: nothing to list
        return [b for b in entries if b.is_file()]

    def blobs_by_name(self) -> dict[str, list[Path]]:
        """Every entry of every repository's blobs folder, by name: one listing
        per repository (a pull looks up many blobs; a glob each would cost more)."""
        index: dict[str, list[Path]] = {}
        try:
            repos = [e.name for e in os.scandir(self.root) if e.is_dir()]
        except FileNotFoundError:
            return index  # an empty home
        except OSError as exc:
            log.debug("no blobs listed in %s: %s", self.root, exc)
            return index
        for name in repos:
            blobs = self.root / name / BLOBS
            try:
                names = os.listdir(blobs)
            except OSError:
                continue  # a folder without blobs
            for blob in names:
                index.setdefault(blob, []).append(blobs / blob)
        return index

    def linked_blob(self, ref: RepoRef, link: Path) -> str | None:
        """The blob a snapshot entry names: its link target's file name when
        the link points straight into ``ref``'s blobs folder (the name *is*
        the hash); None for a plain file or a link elsewhere."""
        try:
            target = os.readlink(link)
        except OSError:
            return None  # not a link: a plain copy
        full = os.path.normpath(os.path.join(os.path.dirname(link), target))
        return os.path.basename(full) if os.path.dirname(full) == str(self.blobs_dir(ref)) else None

    def snapshot_links(self, ref: RepoRef) -> Iterator[tuple[str, str]]:
        """``(path under snapshots/, target file name)`` of every symlink in
        the snapshots of ``ref`` (the target's name is the blob it uses)."""
        snaps = self.snapshots_dir(ref)
        for dirpath, _dirs, names in os.walk(snaps):
            for name in names:
                p = Path(dirpath) / name
                if p.is_symlink():
                    yield p.relative_to(snaps).as_posix(), Path(os.readlink(p)).name
