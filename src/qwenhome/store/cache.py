"""The on-disk store: blobs, snapshot links, refs and qwenhome's manifests.

Writes are crash-safe without relying on locks: content goes to a unique
temporary file, is verified, then renamed into ``blobs/``; links and refs are
replaced atomically. Locks only avoid duplicate work between processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import DiskFullError, LockTimeoutError, NotCachedError, ReadOnlyHomeError, StoreError
from ..repo.manifest import Manifest
from ..repo.ref import RepoRef, validate_etag, validate_relpath
from .layout import HubCache, folder_name, link_target

log = logging.getLogger(__name__)


class Store(HubCache):
    """The home's hub cache (``hub_cache``), with qwenhome's own state beside it
    (``state_dir``: manifests, partial downloads, locks, Xet recipes). Every write to the
    home goes through here."""

    def __init__(self, hub_cache: Path, state_dir: Path) -> None:
        super().__init__(hub_cache)
        self.state_dir = state_dir
        # Folders made and checked once per process: a pull links hundreds of
        # files into a few folders, and resolving each path costs a dozen lstat.
        self._ready_dirs: set[Path] = set()

    # -- qwenhome's state --------------------------------------------------
    def manifests_dir(self, ref: RepoRef) -> Path:
        return self.state_dir / "manifests" / folder_name(ref)

    def manifest_path(self, ref: RepoRef, commit: str) -> Path:
        return self.manifests_dir(ref) / f"{commit}.json"

    @property
    def partials_dir(self) -> Path:
        return self.state_dir / "partials"

    def partial_path(self, etag: str) -> Path:
        return self.partials_dir / f"{validate_etag(etag)}.part"

    @property
    def xet_dir(self) -> Path:
        """Xet state: the mirror's records (``files/``, ``recipes/``,
        ``xorbs/``) and the recipes of pulled blobs (``pulled/``)."""
        return self.state_dir / "xet"

    def recipe_path(self, sha256: str) -> Path:
        """The Xet recipe kept for the blob ``sha256`` (see store/recipes.py)."""
        return self.xet_dir / "pulled" / f"{validate_etag(sha256)}.json"

    # -- refs --------------------------------------------------------------
    def write_ref(self, ref: RepoRef, name: str, commit: str) -> None:
        if name == commit or self.read_ref(ref, name) == commit:
            return  # nothing to write (and a read-only home stays usable)
        atomic_write(self.ref_path(ref, name), commit)

    # -- manifests ---------------------------------------------------------
    def save_manifest(self, manifest: Manifest) -> None:
        ref = RepoRef(manifest.repo_id, manifest.repo_type)
        atomic_write(self.manifest_path(ref, manifest.commit), manifest.to_json())

    def load_manifest(self, ref: RepoRef, commit: str) -> Manifest | None:
        path = self.manifest_path(ref, commit)
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None  # not pulled by qwenhome (or not yet)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            log.debug("manifest %s not read (%r): the snapshot is taken as it is", path, exc)
            return None

    # -- blobs and links ---------------------------------------------------
    def install_blob(self, ref: RepoRef, etag: str, src: Path) -> Path:
        """Move a verified file into ``blobs/`` atomically (copy across filesystems)."""
        dest = self.blob_path(ref, etag)
        with writing(dest):
            return self._install_blob(etag, src, dest)

    def _install_blob(self, etag: str, src: Path, dest: Path) -> Path:
        if dest.parent not in self._ready_dirs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._ready_dirs.add(dest.parent)
        try:
            try:
                os.replace(src, dest)
            except FileNotFoundError:
                if not src.exists():
                    raise
                # The folder went away since it was made (rm, gc): make it again.
                self._ready_dirs.discard(dest.parent)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            import shutil  # only across filesystems: not worth its import time on every start

            tmp = dest.with_name(f"{etag}.{unique_suffix()}.incomplete")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            src.unlink(missing_ok=True)
        return dest

    def hardlink_blob(self, ref: RepoRef, etag: str, other: Path) -> Path:
        """Make ``other`` (an identical blob of another repository of the
        home) the blob ``etag`` of ``ref`` too, by a hard link. Raises
        OSError (another filesystem, no hard links...): the caller fetches instead."""
        dest = self.blob_path(ref, etag)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{etag}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        os.link(other, tmp)
        os.replace(tmp, dest)
        return dest

    def link(self, ref: RepoRef, commit: str, relpath: str, etag: str) -> Path:
        """Point ``snapshots/<commit>/<relpath>`` at its blob with a relative symlink."""
        with writing(self.snapshot_dir(ref, commit)):
            try:
                return self._link(ref, commit, relpath, etag)
            except FileNotFoundError:
                # A folder this process made went away since (rm, gc): check anew.
                self._ready_dirs.clear()
                return self._link(ref, commit, relpath, etag)

    def _link(self, ref: RepoRef, commit: str, relpath: str, etag: str) -> Path:
        validate_relpath(relpath)
        snap = self.snapshot_dir(ref, commit)
        target = snap / relpath
        blob = self.blob_path(ref, etag)
        if target.parent not in self._ready_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Refuse to follow a symlinked directory that something else planted.
            if not target.parent.resolve().is_relative_to(snap.resolve()):
                raise StoreError(f"snapshot folder for {relpath!r} leaves the snapshot", code="unsafe-path")
            self._ready_dirs.add(target.parent)
        rel = link_target(relpath, blob.name)
        try:
            os.symlink(rel, target)  # a new snapshot: one system call
            return target
        except OSError as exc:
            # Already there (as on every pull of a complete snapshot, where a
            # read-only home may answer EROFS rather than EEXIST): nothing to write.
            if target.is_symlink() and os.readlink(target) == rel:
                return target
            if not isinstance(exc, FileExistsError):
                raise
        tmp = target.with_name(f".{target.name}.{unique_suffix()}.tmp")
        os.symlink(rel, tmp)
        os.replace(tmp, target)  # replaced atomically: readers never see it missing
        return target

    # -- queries -----------------------------------------------------------
    def snapshot_path(self, ref: RepoRef) -> Path:
        """The complete local snapshot for ``ref``; raises when absent or incomplete."""
        commit = self.resolve_commit(ref)
        if commit is None:
            raise NotCachedError(f"{ref} is not in the home ({self.root})", repo=str(ref))
        snap = self.snapshot_dir(ref, commit)
        missing = self.missing_files(ref, commit)
        if missing:
            raise NotCachedError(
                f"{ref} is incomplete: {len(missing)} file(s) missing, e.g. {missing[0]}",
                code="snapshot-incomplete",
                hint="run `qwenhome pull` again; it resumes where it stopped",
                repo=str(ref),
            )
        if not snap.is_dir():
            raise NotCachedError(f"{ref} is not in the home ({self.root})", repo=str(ref))
        return snap

    def missing_files(self, ref: RepoRef, commit: str) -> list[str]:
        """Files the manifest lists that are not linked to a present blob."""
        manifest = self.load_manifest(ref, commit)
        if manifest is None:
            return []
        snap = str(self.snapshot_dir(ref, commit))
        missing = []
        for f in manifest.files:
            try:  # one stat through the link: a dangling link is missing too
                present = stat.S_ISREG(os.stat(os.path.join(snap, f.path)).st_mode)
            except (OSError, ValueError):
                present = False
            if not present:
                missing.append(f.path)
        return missing

    # -- locks -------------------------------------------------------------
    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    def file_lock(self, name: str) -> FileLock:
        return FileLock(self.locks_dir / f"{name}.lock")

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """An inter-process lock (flock). Correctness never depends on it."""
        lk = self.file_lock(name)
        if not lk.acquire(timeout=timeout):
            raise LockTimeoutError(f"timed out waiting for lock {lk.path}")
        try:
            yield
        finally:
            lk.release()


class FileLock:
    """flock-based lock whose file exists only while it is held (a pull takes
    one per blob: kept, they would cost an inode per blob forever).

    Removing a lock file is safe because a holder checks, once it has the
    lock, that the path still names the file it locked; when not (removed, or
    made anew by another process), it locks again. Where the filesystem has no
    working flock, or the home is read-only (nothing to protect: no write can
    happen), it degrades to no lock: every writer uses verified
    content-addressed files, so that is slower at worst, never wrong."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def acquire(self, timeout: float = 0.0, poll: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open()
            if fd < 0:
                return True  # a read-only home: no lock (see the class docstring)
            got = self._try(fd, deadline, poll)
            if got is None:
                self._fd = fd
                return True
            if not got:
                return False
            # Locked, but the path was removed or replaced meanwhile: lock anew.

    def _open(self) -> int:
        """The lock file's descriptor (made as needed), or -1 on a read-only home."""
        try:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
            except FileNotFoundError:  # the first lock in this folder
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return -1
            raise translate_os_error(exc, self.path) from exc

    def _try(self, fd: int, deadline: float, poll: float) -> bool | None:
        """Lock ``fd``: None when held and still the file at the path; True to
        try again with a fresh descriptor; False on time-out."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return None
                os.close(fd)
                raise translate_os_error(exc, self.path) from exc
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if same:
            return None
        os.close(fd)
        return True

    def release(self, remove: bool = True) -> None:
        """Unlock; ``remove`` deletes the lock file first (under the lock, so a
        waiter that then gets the old file sees it is gone and locks anew)."""
        if self._fd >= 0:
            if remove:
                try:
                    self.path.unlink()
                except OSError as exc:
                    log.debug("lock file %s not removed: %s", self.path, exc)
            os.close(self._fd)
            self._fd = -1


def remove_stale_locks(locks_dir: Path) -> list[str]:
    """Remove lock files nobody holds (left by a killed process); returns their names.
    A file is removed under its lock, as :meth:`FileLock.release` does."""
    try:
        names = sorted(n for n in os.listdir(locks_dir) if n.endswith(".lock"))
    except FileNotFoundError:
        return []  # no lock was ever taken here
    except OSError as exc:
        log.debug("locks in %s not listed: %s", locks_dir, exc)
        return []
    removed = []
    for name in names:
        path = locks_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # never made here
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held (or no flock here: whether it is held cannot be told)
                continue
            try:
                stale = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                continue
            if stale:
                path.unlink()
                removed.append(name)
        finally:
            os.close(fd)
    return removed


_tmp_count = itertools.count()


def unique_suffix() -> str:
    """A name part no other writer uses at the same moment (process, thread,
    counter): cheaper than a random UUID for the hundreds of temporary names a
    pull makes."""
    return f"{os.getpid()}-{threading.get_ident() % 100000}-{next(_tmp_count)}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise translate_os_error(exc, path) from exc


def translate_os_error(exc: OSError, path: Path, *, home: bool = True) -> Exception:
    """Map an OSError of a write to the store's errors: disk full (ENOSPC, also
    out of inodes; EDQUOT, EFBIG) to DiskFullError; a home that cannot be
    written (EROFS, EACCES, EPERM) to ReadOnlyHomeError; others to StoreError.
    ``home=False`` for a path the user chose outside the home (an export)."""
    named = exc.filename2 if isinstance(exc.filename2, str) else exc.filename  # (rename, link: the new name)
    where = Path(named) if isinstance(named, str) else path
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        if exc.errno == errno.ENOSPC and _out_of_inodes(where):
            return DiskFullError(f"no inodes left writing {where} (the filesystem holds as many files as it can)",
                                 hint="`df -i` shows it: remove files there (`qwenhome gc`), or point QWEN_HOME / "
                                      "--home at another disk; the partial download is kept and resumes",
                                 path=where)
        why = "" if exc.errno == errno.ENOSPC else f" ({exc.strerror or exc})"
        return DiskFullError(f"no space left writing {where}{why}", path=where)
    if home and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyHomeError(f"cannot write {where}: {exc.strerror or exc}", path=where)
    return StoreError(f"cannot write {where}: {exc.strerror or exc}", code="store-io", path=where)


def _out_of_inodes(path: Path) -> bool:
    """Whether the filesystem holding ``path`` (or its nearest existing folder) has no free inode."""
    for place in (path, *path.parents):
        try:
            st = os.statvfs(place)
        except OSError:
            continue
        return st.f_files > 0 and st.f_favail == 0
    return False


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Translate any OSError raised inside into the store's errors (see
    :func:`translate_os_error`); ``path`` names the place when the error does not."""
    try:
        yield
    except OSError as exc:
        raise translate_os_error(exc, path) from exc
