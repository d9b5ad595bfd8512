"""What the home holds: repositories, revisions, sizes, completeness."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import Store
from .layout import RepoRef, is_commit, parse_folder_name


@dataclass
class RevisionInfo:
    commit: str
    refs: list[str] = field(default_factory=list)
    files: int = 0
    size: int = 0
    complete: bool | None = None  # None: no manifest (e.g. written by another tool)
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


def _refs(repo_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    refs_dir = repo_dir / "refs"
    if not refs_dir.is_dir():
        return out
    for path in refs_dir.rglob("*"):
        if path.is_file():
            try:
                commit = path.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            out.setdefault(commit, []).append(path.relative_to(refs_dir).as_posix())
    return out


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
        info.complete = not info.missing
    return info


def list_repos(store: Store) -> list[RepoInfo]:
    """Every repository folder of the store, sorted by id."""
    out: list[RepoInfo] = []
    if not store.root.is_dir():
        return out
    for entry in sorted(store.root.iterdir()):
        ref = parse_folder_name(entry.name)
        if ref is None or not entry.is_dir():
            continue
        info = RepoInfo(ref, entry)
        blobs = entry / "blobs"
        if blobs.is_dir():
            for b in blobs.iterdir():
                try:
                    if b.is_file() and not b.name.endswith(".incomplete"):
                        info.size += b.stat().st_size
                except OSError:
                    continue
        by_commit = _refs(entry)
        snaps = entry / "snapshots"
        if snaps.is_dir():
            for s in sorted(snaps.iterdir()):
                if s.is_dir() and is_commit(s.name):
                    info.revisions.append(revision_info(store, ref, s.name, by_commit.get(s.name)))
        out.append(info)
    return out
