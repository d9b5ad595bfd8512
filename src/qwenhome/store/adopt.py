"""Bring models already on disk into the home without downloading them again.

Recognised (see :func:`discover`):
- a Hugging Face hub cache (``models--Org--Name/{blobs,snapshots,refs}``),
  one repository folder of it, or a home holding one in ``hub/`` (another
  ``QWEN_HOME`` or ``HF_HOME``);
- a ModelScope cache: ``models/{owner}--{name}/snapshots/{rev}/`` and the
  legacy ``hub/[models/]{owner}/{name}/`` (``.`` stored as ``___``);
- a plain folder (``save_pretrained``, ``local_dir``): the repository id is
  ``--as Org/Name`` or ``local/<folder name>``.

Every file becomes a blob by hard link (same inode: no extra disk) or, across
filesystems, by copy, always to a temporary name first; its hash is checked
there and only then is it renamed into ``blobs/``. Blob names: the other
cache's blob name when it has one (sha256 or git blob oid, checked), the
``etag`` a ``local_dir`` download recorded, otherwise the sha256 (and, for
files under 10 MB, the git blob oid as a second hard link: the name the Hub
gives small files, so a later Hub pull finds them too). A snapshot
known only by content gets the deterministic id
:func:`qwenhome.repo.manifest.listing_commit` (path, size, sha256 of every
file), so the same files always give the same commit, as a ModelScope pull does.
Small files of plain folders are copied, not linked: users edit those in place.

Adoption never reads through a symlink that leaves what was named: a hub
cache's snapshot links must point into that repository's own ``blobs/``; in a
folder, a link must stay inside the folder; symlinked repository, snapshot and
blob folders are not followed. Such links are left out with a warning that
names them. Each file is opened without following links and must still be the
file that was listed; a copy is never more readable than its source.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    DiskFullError,
    NotCachedError,
    QwenhomeError,
    ReadOnlyHomeError,
    StoreError,
    UsageError,
)
from ..repo.hashing import hash_file
from ..repo.manifest import Manifest, RepoFile, listing_commit
from ..repo.ref import RepoRef, etag_kind, is_commit, validate_relpath
from .cache import Store, translate_os_error, writing
from .layout import HubCache, parse_folder_name

log = logging.getLogger(__name__)

COPY_BELOW = 1 << 20  # plain-folder files smaller than this are copied
# Files known only by content and smaller than this (the Hub's LFS threshold)
# also get their git blob oid as a second blob name.
GIT_NAME_BELOW = 10 * 1000 * 1000
_SKIP_DIRS = {".git", ".cache", ".huggingface", "__pycache__", "._____temp"}
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class FoundFile:
    path: str  # path inside the repository
    real: Path  # the file on disk (symlinks resolved, checked to stay inside what was adopted)
    size: int
    etag: str | None = None  # a blob name the other cache claims; checked before use


@dataclass
class Found:
    """One snapshot found on disk."""

    kind: str  # hf-cache | modelscope | folder
    ref: RepoRef
    origin: Path  # where it was found
    files: list[FoundFile]
    commit: str | None = None  # known for hub caches and local_dir downloads
    refs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # links left out, each named with the reason

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "repo": str(self.ref), "origin": str(self.origin), "commit": self.commit,
                "files": len(self.files), "size": sum(f.size for f in self.files), "refs": self.refs,
                "skipped": self.skipped}


@dataclass
class AdoptReport:
    repo: str
    kind: str
    origin: str
    commit: str = ""
    files: int = 0
    linked: int = 0
    copied: int = 0
    present: int = 0
    bytes_linked: int = 0
    bytes_copied: int = 0
    refs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "error[code]: message", one per file left out
    skipped: list[str] = field(default_factory=list)  # links out of what was adopted, left out
    snapshot: str = ""
    verified: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"ok": self.ok}


# -- discovery ---------------------------------------------------------------------------
def default_places(env: Mapping[str, str], own_store: Path) -> list[Path]:
    """Caches other tools use on this machine (never the home's own store)."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    xdg = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    places = [
        Path(env["HF_HUB_CACHE"]) if env.get("HF_HUB_CACHE") else None,
        Path(env["HF_HOME"]) / "hub" if env.get("HF_HOME") else None,
        xdg / "huggingface" / "hub",
        Path(env["MODELSCOPE_CACHE"]) if env.get("MODELSCOPE_CACHE") else None,
        xdg / "modelscope",
    ]
    own = _real(own_store)
    out: list[Path] = []
    for p in places:
        if p is not None and p.is_dir() and _real(p) != own and p not in out:
            out.append(p)
    return out


def _real(p: Path) -> str:
    return os.path.realpath(p)


def _is_repo_folder(p: Path) -> bool:
    """Whether ``p`` is a repository folder of a hub cache."""
    ref = parse_folder_name(p.name)
    return ref is not None and HubCache(p.parent).has_repo(ref)


def discover(paths: Sequence[Path], *, as_repo: str | None = None, own_store: Path | None = None) -> list[Found]:
    """Snapshots found under ``paths`` (see the module docstring)."""
    found: list[Found] = []
    own = _real(own_store) if own_store is not None else None
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.is_dir():
            raise UsageError(f"{p} is not a folder", code="adopt-not-found", hint="give a cache or model folder")
        if own is not None and (_real(p) == own or _real(p) == os.path.dirname(own)):
            continue
        if _is_repo_folder(p):
            found += _hf_repo(p)
        elif any(_is_repo_folder(c) for c in _children(p)):
            for c in _children(p):
                if _is_repo_folder(c):
                    found += _hf_repo(c)
        elif (p / "hub").is_dir() and any(_is_repo_folder(c) for c in _children(p / "hub")):
            found += discover([p / "hub"], own_store=own_store)
        elif _modelscope_roots(p):
            for ref, folder in _modelscope_roots(p):
                found.append(_folder(folder, ref, "modelscope"))
        elif any(c.is_file() for c in p.iterdir()):
            found.append(_folder(p, _folder_ref(p, as_repo), "folder"))
    if as_repo and len(found) > 1:
        raise UsageError("--as names one repository, but several were found", code="adopt-ambiguous")
    return found


def _children(p: Path) -> list[Path]:
    """Sub-folders of ``p``, symlinked ones left out: a link could lead anywhere
    (``snapshots/<sha> -> /etc``), and only what was named is adopted."""
    try:
        return sorted(c for c in p.iterdir() if c.is_dir() and not c.is_symlink())
    except OSError as exc:
        log.debug("folder %s not listed: %s", p, exc)
        return []


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _folder_ref(p: Path, as_repo: str | None) -> RepoRef:
    if as_repo:
        return RepoRef.parse(as_repo)
    name = _NAME_OK.sub("-", p.resolve().name).strip(".-") or "model"
    return RepoRef.parse(f"local/{name[:96]}")


def _hf_repo(repo_dir: Path) -> list[Found]:
    ref = parse_folder_name(repo_dir.name)
    assert ref is not None
    cache = HubCache(repo_dir.parent)
    refs: dict[str, list[str]] = {}
    for name, commit in cache.refs(ref).items():
        refs.setdefault(commit, []).append(name)
    # Snapshot links may point only into this repository's own blobs/ (itself no link).
    blobs = cache.blobs_dir(ref)
    blobs_real = _real(blobs) if blobs.is_dir() and not blobs.is_symlink() else None
    out = []
    for snap in _children(cache.snapshots_dir(ref)):
        if not is_commit(snap.name):
            continue
        snap_real = _real(snap)

        def allowed(real: str, snap_real: str = snap_real) -> bool:
            # A cache made without symlinks keeps real files in the snapshot.
            return (blobs_real is not None and os.path.dirname(real) == blobs_real) or _inside(real, snap_real)

        files = []
        walked, skipped = _walk(snap, skip_hidden=False, allowed=allowed, what=blobs.relative_to(cache.root).as_posix())
        for rel, real in walked:
            target = os.readlink(snap / rel) if (snap / rel).is_symlink() else ""
            name = os.path.basename(target)
            files.append(FoundFile(rel, real, real.stat().st_size, name if etag_kind(name) else None))
        out.append(Found("hf-cache", ref, snap, files, snap.name, sorted(refs.get(snap.name, [])), skipped))
    return out


def _walk(top: Path, *, skip_hidden: bool, allowed: Callable[[str], bool] | None = None,
          what: str = "") -> tuple[list[tuple[str, Path]], list[str]]:
    """(relative path, real file) of every regular file below ``top`` whose
    real path ``allowed`` accepts (default: inside ``top``), and a warning for
    each link left out. Symlinked folders are not followed."""
    root = _real(top)
    ok = allowed or (lambda real: _inside(real, root))
    where = what or str(top)
    out, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not (skip_hidden and d in _SKIP_DIRS))
        for d in dirnames:
            full = Path(dirpath) / d
            if full.is_symlink() and not ok(_real(full)):
                skipped.append(f"{full}: link to a folder outside {where}, not followed")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            real = _real(full)
            if full.is_symlink() and not ok(real):
                skipped.append(f"{full}: link to {real}, outside {where}; left out")
                continue
            if not os.path.isfile(real):
                continue  # a dangling link: the other cache is incomplete there
            rel = full.relative_to(top).as_posix()
            try:
                out.append((validate_relpath(rel), Path(real)))
            except QwenhomeError as exc:
                log.debug("%s left out: %s", full, exc.message)
                continue
    return out, skipped


def _local_dir_meta(folder: Path, rel: str) -> tuple[str, str] | None:
    """(commit, etag) that huggingface_hub recorded for a ``local_dir`` download."""
    meta = folder / ".cache" / "huggingface" / "download" / f"{rel}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None  # not a local_dir download, or not this file
    except OSError as exc:
        log.debug("%s not read: %s", meta, exc)
        return None
    if len(lines) >= 2 and is_commit(lines[0].strip()) and etag_kind(lines[1].strip()):
        return lines[0].strip(), lines[1].strip()
    return None


def _folder(folder: Path, ref: RepoRef, kind: str) -> Found:
    files = []
    commits = set()
    walked, skipped = _walk(folder, skip_hidden=True)
    for rel, real in walked:
        meta = _local_dir_meta(folder, rel) if kind == "folder" else None
        if meta is not None:
            commits.add(meta[0])
        files.append(FoundFile(rel, real, real.stat().st_size, meta[1] if meta else None))
    commit = commits.pop() if len(commits) == 1 and all(f.etag for f in files) else None
    return Found(kind, ref, folder, files, commit, skipped=skipped)


def _modelscope_roots(p: Path) -> list[tuple[RepoRef, Path]]:
    out: list[tuple[RepoRef, Path]] = []
    for repo in _children(p / "models"):  # new layout: models/{owner}--{name}/snapshots/{rev}
        owner, sep, name = repo.name.partition("--")
        if sep and (repo / "snapshots").is_dir():
            for snap in _children(repo / "snapshots"):
                out += _ms_ref(owner, name, snap)
    for base in (p / "hub" / "models", p / "hub"):  # legacy: hub/[models/]{owner}/{name}
        for org in _children(base):
            if org.name in ("models", "datasets") or org.name.startswith("."):
                continue
            for repo in _children(org):
                if (repo / "config.json").is_file() or (repo / "configuration.json").is_file():
                    out += _ms_ref(org.name, repo.name.replace("___", "."), repo)
    return out


def _ms_ref(owner: str, name: str, folder: Path) -> list[tuple[RepoRef, Path]]:
    try:
        return [(RepoRef.parse(f"{owner}/{name}"), folder)]
    except QwenhomeError as exc:
        log.debug("%s left out: %s", folder, exc.message)
        return []


# -- adoption ------------------------------------------------------------------------------
def _open_listed(f: FoundFile) -> tuple[int, os.stat_result]:
    """Open the file discovery listed, not following a link, and check it is
    still that regular file (a folder on its path swapped for a link since
    would lead elsewhere)."""
    try:
        fd = os.open(f.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError as exc:
        raise StoreError(f"{f.real}: cannot be read ({exc.strerror}); left out", code="adopt-unreadable") from exc
    except OSError as exc:  # ELOOP: it became a link
        raise StoreError(f"{f.real}: changed since it was listed ({exc.strerror}); left out",
                         code="adopt-changed") from exc
    st = os.fstat(fd)
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:  # no /proc: O_NOFOLLOW on the resolved path is the guard
        log.debug("opened path of %s not read: %s", f.real, exc)
        opened = str(f.real)
    if not stat.S_ISREG(st.st_mode) or opened != str(f.real):
        os.close(fd)
        raise StoreError(f"{f.real}: changed since it was listed; left out", code="adopt-changed")
    return fd, st


def _copy_from(fd: int, st: os.stat_result, dest: Path) -> None:
    """Copy an open file to ``dest``, never more readable than the source."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, stat.S_IMODE(st.st_mode) & 0o666)
    with os.fdopen(fd, "rb", closefd=False) as src, os.fdopen(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _place(store: Store, ref: RepoRef, f: FoundFile, copy: bool, verify: bool = True) -> tuple[str, str]:
    """Put ``f`` into ``blobs/`` verified; returns (etag, how: present|linked|copied).
    ``verify=False`` trusts a blob name the other cache gives (size still checked)."""
    if f.etag is not None and store.has_blob(ref, f.etag, f.size):
        return f.etag, "present"
    blobs = store.blobs_dir(ref)
    tmp = blobs / f".adopt-{uuid.uuid4().hex[:12]}.incomplete"
    how = "copied"
    fd, st = _open_listed(f)
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        if not copy:
            try:
                os.link(f.real, tmp, follow_symlinks=False)
                how = "linked"
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
            if how == "linked" and (tmp.lstat().st_ino, tmp.lstat().st_dev) != (st.st_ino, st.st_dev):
                raise StoreError(f"{f.real}: changed since it was listed; left out", code="adopt-changed")
        if how == "copied":
            _copy_from(fd, st, tmp)
        # Hash what now sits in the home (the same inode when linked): what is
        # checked is exactly what becomes visible.
        if f.etag is not None and not verify:
            digest = f.etag
        else:
            digest = hash_file(tmp, etag_kind(f.etag) or "sha256" if f.etag else "sha256")
        etag = f.etag or digest
        if digest != etag or tmp.stat().st_size != f.size:
            raise StoreError(f"{f.real}: content does not match its name {etag[:12]}…", code="hash-mismatch")
        if f.etag is None and f.size < GIT_NAME_BELOW:
            _add_git_name(store, ref, tmp)
        if store.has_blob(ref, etag, f.size):
            tmp.unlink()
            return etag, "present"
        os.replace(tmp, store.blob_path(ref, etag))
        return etag, how
    except OSError as exc:
        raise translate_os_error(exc, tmp) from exc
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def _add_git_name(store: Store, ref: RepoRef, blob: Path) -> None:
    """The Hub names small (non-LFS) files by git blob oid: a second hard link
    under that name lets a later Hub pull find this file instead of fetching it."""
    oid_path = store.blob_path(ref, hash_file(blob, "git-sha1"))
    if not oid_path.exists():
        tmp = oid_path.with_name(f".adopt-{uuid.uuid4().hex[:12]}.link")
        try:
            os.link(blob, tmp)
            os.replace(tmp, oid_path)
        finally:
            tmp.unlink(missing_ok=True)


def adopt(store: Store, found: Found, *, workers: int = 2, verify: bool = True) -> AdoptReport:
    """Bring one found snapshot into ``store``; a file that fails its hash
    check (or cannot be read) is left out and reported (the snapshot then
    stays incomplete); a home that cannot be written or is full stops it.
    ``verify=False`` trusts the other cache's blob names (``qwenhome verify``
    checks them later); files known only by content are always hashed."""
    with writing(store.repo_dir(found.ref)):
        return _adopt(store, found, workers, verify)


def _adopt(store: Store, found: Found, workers: int, verify: bool) -> AdoptReport:
    ref = found.ref
    rep = AdoptReport(str(ref), found.kind, str(found.origin), files=len(found.files), verified=verify,
                      skipped=list(found.skipped))
    placed: list[tuple[FoundFile, str]] = []

    def one(f: FoundFile) -> tuple[FoundFile, str, str]:
        copy = found.kind == "folder" and f.size < COPY_BELOW
        etag, how = _place(store, ref, f, copy, verify)
        return f, etag, how

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(one, f) for f in found.files]
        for fut in futures:
            try:
                f, etag, how = fut.result()
            except (DiskFullError, ReadOnlyHomeError):
                raise  # the home, not this file: nothing else would fit either
            except QwenhomeError as exc:
                rep.problems.append(f"error[{exc.code}]: {exc.message}")
                continue
            placed.append((f, etag))
            setattr(rep, how, getattr(rep, how) + 1)
            if how == "linked":
                rep.bytes_linked += f.size
            elif how == "copied":
                rep.bytes_copied += f.size
    files = [RepoFile(f.path, f.size, etag if etag_kind(etag) == "git-sha1" else None,
                      etag if etag_kind(etag) == "sha256" else None) for f, etag in placed]
    commit = found.commit or listing_commit(ref.repo_id, "", [
        RepoFile(f.path, f.size, None, etag) for f, etag in placed])
    rep.commit = commit
    if rep.problems and found.commit is None:
        return rep  # a content-derived id of an incomplete folder would be wrong
    for f, etag in placed:
        store.link(ref, commit, f.path, etag)
    previous = store.load_manifest(ref, commit)
    if previous is not None:
        known = {f.path for f in files}
        files += [f for f in previous.files if f.path not in known]
    source = f"adopt:{found.kind}"
    store.save_manifest(Manifest(ref.repo_id, ref.repo_type, commit, files, source))
    # A hub cache says which revisions point where; a folder is "main".
    for name in found.refs if found.kind == "hf-cache" else ["main"]:
        current = store.read_ref(ref, name)
        if current is None or current == commit:
            store.write_ref(ref, name, commit)
            rep.refs.append(name)
    try:
        rep.snapshot = str(store.snapshot_dir(ref, commit))
        store.snapshot_path(ref.at(commit))
    except NotCachedError as exc:
        rep.problems.append(f"error[{exc.code}]: {exc.message}")
    return rep
