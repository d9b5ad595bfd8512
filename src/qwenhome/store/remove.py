"""Removing repositories or revisions, and collecting garbage: blobs no
snapshot links to, stale partial downloads and lock files nobody holds."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotCachedError
from .cache import Store, remove_stale_locks, writing
from .layout import RepoRef, is_commit


@dataclass
class RemoveReport:
    removed: list[str] = field(default_factory=list)
    freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "freed": self.freed}


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            p = Path(dirpath) / n
            if not p.is_symlink():
                try:
                    total += p.stat().st_size
                except OSError:
                    pass
    return total


def remove_repo(store: Store, ref: RepoRef) -> RemoveReport:
    """Remove a whole repository, or with ``@rev`` one revision (then gc its blobs)."""
    with writing(store.repo_dir(ref)):
        return _remove_repo(store, ref)


def _remove_repo(store: Store, ref: RepoRef) -> RemoveReport:
    repo_dir = store.repo_dir(ref)
    if not repo_dir.is_dir():
        raise NotCachedError(f"{ref} is not in the home", repo=str(ref))
    report = RemoveReport()
    if ref.revision is None:
        report.freed = _tree_size(repo_dir)
        shutil.rmtree(repo_dir)
        shutil.rmtree(store.state_dir / "manifests" / ref.folder_name, ignore_errors=True)
        report.removed.append(str(ref))
        return report
    commit = ref.revision if is_commit(ref.revision) else store.read_ref(ref, ref.revision)
    if commit is None or not store.snapshot_dir(ref, commit).exists():
        raise NotCachedError(f"{ref} is not in the home", code="revision-not-cached", repo=str(ref))
    shutil.rmtree(store.snapshot_dir(ref, commit))
    store.manifest_path(ref, commit).unlink(missing_ok=True)
    refs_dir = repo_dir / "refs"
    if refs_dir.is_dir():
        for p in list(refs_dir.rglob("*")):
            if p.is_file() and p.read_text(encoding="utf-8").strip() == commit:
                p.unlink()
    report.removed.append(f"{ref.at(None)}@{commit}")
    gc = collect_garbage(store, only=ref)
    report.freed = gc.freed
    return report


def _linked_blobs(repo_dir: Path) -> set[str]:
    linked: set[str] = set()
    snaps = repo_dir / "snapshots"
    for dirpath, _dirs, names in os.walk(snaps):
        for n in names:
            p = Path(dirpath) / n
            if p.is_symlink():
                linked.add(Path(os.readlink(p)).name)
    return linked


def collect_garbage(
    store: Store, *, only: RepoRef | None = None, partial_age: float = 7 * 86400, now: float | None = None
) -> RemoveReport:
    """Delete unreferenced blobs, partial downloads untouched for ``partial_age``
    seconds and (for the whole home) lock files nobody holds."""
    with writing(store.root):
        return _collect_garbage(store, only, partial_age, now)


def _collect_garbage(store: Store, only: RepoRef | None, partial_age: float, now: float | None) -> RemoveReport:
    report = RemoveReport()
    now = time.time() if now is None else now
    repos = [store.repo_dir(only)] if only else ([p for p in store.root.iterdir() if p.is_dir()] if store.root.is_dir() else [])
    for repo_dir in repos:
        blobs = repo_dir / "blobs"
        if not blobs.is_dir():
            continue
        linked = _linked_blobs(repo_dir)
        for b in blobs.iterdir():
            if b.name in linked or not b.is_file():
                continue
            # In-flight temp files of other processes are young; keep them.
            if b.name.endswith(".incomplete") and now - b.stat().st_mtime < partial_age:
                continue
            report.freed += b.stat().st_size
            b.unlink(missing_ok=True)
            report.removed.append(f"{repo_dir.name}/blobs/{b.name}")
    partials = store.partials_dir
    if only is None and partials.is_dir():
        for p in partials.iterdir():
            try:
                st = p.stat()
            except OSError:
                continue
            if now - st.st_mtime >= partial_age:
                report.freed += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
                p.unlink(missing_ok=True)
                report.removed.append(f"partials/{p.name}")
    if only is None:
        report.removed += [f"locks/{name}" for name in remove_stale_locks(store.locks_dir)]
    return report
