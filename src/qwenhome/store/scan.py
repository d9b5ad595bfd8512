"""What the home holds: repositories, revisions, sizes, completeness."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..repo.ref import RepoRef
from .cache import Store

log = logging.getLogger(__name__)


@dataclass
class RevisionInfo:
    commit: str
    refs: list[str] = field(default_factory=list)
    files: int = 0
    size: int = 0
    complete: bool | None = None  # None: no manifest (e.g. written by another tool) or one no source confirmed
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "refs": self.refs,
            "files": self.files,
            "size": self.size,
            "complete": self.complete,
            "missing": self.missing[:20],
        }


@dataclass
class RepoInfo:
    ref: RepoRef
    path: Path
    size: int = 0  # bytes of blobs on disk (shared blobs counted once)
    revisions: list[RevisionInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": str(self.ref),
            "type": self.ref.repo_type,
            "path": str(self.path),
            "size": self.size,
            "revisions": [r.to_dict() for r in self.revisions],
        }


def revision_info(store: Store, ref: RepoRef, commit: str, refs: list[str] | None = None) -> RevisionInfo:
    snap = store.snapshot_dir(ref, commit)
    info = RevisionInfo(commit, sorted(refs or []))
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, names in os.walk(snap):
        for name in names:
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue  # dangling link: counted as missing below
            info.files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                info.size += st.st_size
    manifest = store.load_manifest(ref, commit)
    if manifest is not None:
        info.missing = store.missing_files(ref, commit)
        # Adopted from another cache and never listed by a source: what is
        # there is whole, but whether the commit has more files is unknown.
        info.complete = not info.missing if (manifest.confirmed or info.missing) else None
    return info


def list_repos(store: Store) -> list[RepoInfo]:
    """Every repository folder of the store, sorted by id."""
    out: list[RepoInfo] = []
    for ref, path in store.repos():
        if not path.is_dir():
            continue
        info = RepoInfo(ref, path)
        for b in store.blob_files(ref):
            if b.name.endswith(".incomplete"):
                continue
            try:
                info.size += b.stat().st_size
            except OSError as exc:  # gone since it was listed (a gc, an rm)
                log.debug("blob %s not counted: %s", b, exc)
        by_commit: dict[str, list[str]] = {}
        for name, commit in store.refs(ref).items():
            by_commit.setdefault(commit, []).append(name)
        for commit in store.commits(ref):
            info.revisions.append(revision_info(store, ref, commit, by_commit.get(commit)))
        out.append(info)
    return out
