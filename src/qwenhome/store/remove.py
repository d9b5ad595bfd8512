"""Removing repositories or revisions, and collecting garbage: blobs no
snapshot links to, stale partial downloads and lock files nobody holds."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotCachedError
from ..repo.ref import RepoRef, is_commit
from .cache import Store, remove_stale_locks, writing

log = logging.getLogger(__name__)


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
                except OSError as exc:  # gone meanwhile: not counted
                    log.debug("size of %s not counted: %s", p, exc)
    return total


def own_folder(path: Path, base: Path) -> bool:
    """Whether ``path`` (under ``base``) is a folder reached without a
    symbolic link below ``base``: one that is a link may lead anywhere, and
    what gc and rm delete is only ever the home's own."""
    try:
        real = os.path.realpath(path, strict=True)
        return os.path.isdir(real) and real == os.path.join(os.path.realpath(base), path.relative_to(base))
    except (OSError, ValueError):
        return False


def _unlink_or_rmtree(path: Path) -> None:
    """A link is removed, never what it leads to."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


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
        report.freed = _tree_size(repo_dir) if not repo_dir.is_symlink() else 0
        _unlink_or_rmtree(repo_dir)
        shutil.rmtree(store.manifests_dir(ref), ignore_errors=True)
        report.removed.append(str(ref))
        return report
    commit = ref.revision if is_commit(ref.revision) else store.read_ref(ref, ref.revision)
    if commit is None or not store.snapshot_dir(ref, commit).exists():
        raise NotCachedError(f"{ref} is not in the home", code="revision-not-cached", repo=str(ref))
    _unlink_or_rmtree(store.snapshot_dir(ref, commit))
    store.manifest_path(ref, commit).unlink(missing_ok=True)
    for name, points_to in store.refs(ref).items():
        if points_to == commit:
            (store.refs_dir(ref) / name).unlink()
    report.removed.append(f"{ref.at(None)}@{commit}")
    gc = collect_garbage(store, only=ref)
    report.freed = gc.freed
    return report


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
    repos = [only] if only else [ref for ref, path in store.repos() if path.is_dir()]
    for ref in repos:
        if not own_folder(store.blobs_dir(ref), store.root):
            log.debug("%s: its blobs folder is a link (or not a folder): not collected", ref)
            continue
        blobs = store.blob_files(ref)
        if not blobs:
            continue
        linked = {name for _path, name in store.snapshot_links(ref)}
        for b in blobs:
            if b.name in linked:
                continue
            # In-flight temp files of other processes are young; keep them.
            if b.name.endswith(".incomplete") and now - b.lstat().st_mtime < partial_age:
                continue
            report.freed += b.lstat().st_size  # (a link is removed, never what it leads to)
            b.unlink(missing_ok=True)
            report.removed.append(b.relative_to(store.root).as_posix())
    partials = store.partials_dir
    if only is None and own_folder(partials, store.state_dir):
        for p in partials.iterdir():
            try:
                st = p.lstat()
            except OSError as exc:  # gone meanwhile (another gc, a pull that finished)
                log.debug("partial %s not examined: %s", p, exc)
                continue
            if now - st.st_mtime >= partial_age:
                report.freed += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
                p.unlink(missing_ok=True)
                report.removed.append(f"partials/{p.name}")
    if only is None and own_folder(store.locks_dir, store.state_dir):
        report.removed += [f"locks/{name}" for name in remove_stale_locks(store.locks_dir)]
    return report
