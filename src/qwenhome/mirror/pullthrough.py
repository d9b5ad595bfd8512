"""Pull-through: a mirror that fetches what its store lacks from its own sources.

:class:`PullThroughBackend` answers metadata for a repository/revision from the
upstream sources (``settings.sources``, in health order, with failover), and
falls back to the local store when they are unreachable or do not know it.
A ``resolve`` for a file whose blob is missing starts one :class:`Flight`: a
:func:`qwenhome.pull.pull` of that one file at the listed commit in a
background thread, so the engine's ranges, retries, failover and verification
all apply and the verified blob lands in the store. Requests for the same blob
share the flight (and across processes the store's per-blob lock makes a
second puller wait for the first).

Clients are served while the transfer runs by following the partial file and
its part map (:func:`stream`). The part map only claims bytes already written,
but written is not verified, so every streamed response keeps its last byte
back until the blob is verified in the store and the bytes already sent are
proven equal to it; otherwise the connection is closed short of its
Content-Length, never completed, and for a while a resume of that file (an
open-ended Range) is answered with the whole file, so a client that retries
(huggingface_hub does) cannot keep a bad prefix. Ranges that are still being
fetched complete only once the whole file is verified: clients and proxies in
front need read time-outs that allow for that.

Upstream tokens stay inside the puller's HTTP client: clients only ever see
headers and bodies the mirror builds itself.

With Xet on (:mod:`.cas.pending`), the Xet hash of a file the store lacks is
asked of the source that listed it (:meth:`PullThroughBackend.upstream_xet_hash`),
and a client's reconstruction of it starts the same flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import sources as netsources
from ..config import Settings, Source
from ..errors import (
    NetworkError,
    OfflineError,
    QwenhomeError,
    RemoteError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from ..hub.xet import XetSession
from ..net import HttpClient
from ..pull import Puller, engine_config, pull
from ..repo.hashing import git_blob_header
from ..repo.manifest import Manifest, RepoFile, check_tree
from ..repo.ref import RepoRef, is_commit
from ..store.cache import Store
from ..transfer import partmap
from ..transfer.engine import EngineConfig
from .backends import StoreBackend, _TTLCache, check_revision, inside, repo_ref
from .catalog import FileEntry, Snapshot, git_blob_oid, lfs_pointer
from .hashing import HashCache
from .hooks import BodyInterrupted

_CHUNK = 1 << 20
_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")
Decider = Callable[[Settings], netsources.NetworkDecision]
PullFn = Callable[..., object]


class Flight:
    """One upstream transfer of one blob, followed by any number of clients."""

    def __init__(self, ref: RepoRef, commit: str, entry: FileEntry, partial: Path, blob: Path,
                 root: Path) -> None:
        self.ref = ref
        self.commit = commit
        self.entry = entry
        self.partial = partial
        self.blob = blob
        self.root = str(root)
        self.state = "running"  # running | done | failed
        self.error: QwenhomeError | None = None
        self._cond = threading.Condition()

    @property
    def etag(self) -> str:
        return self.entry.etag

    def end(self, error: QwenhomeError | None) -> None:
        with self._cond:
            self.state = "failed" if error is not None else "done"
            self.error = error
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep until the flight ends or ``timeout`` passes (the part map is polled)."""
        with self._cond:
            if self.state == "running":
                self._cond.wait(timeout)

    def blob_real(self) -> str | None:
        """The blob's real path once it is in the store, and only if that is inside
        the store (a link planted in ``blobs/`` must not lead a client elsewhere)."""
        real = os.path.realpath(self.blob)
        return real if inside(real, self.root) and _blob_present(Path(real), self.entry.size) else None

    def written_until(self, pos: int) -> int:
        """End of the written run of bytes starting at ``pos`` (``pos`` if none),
        as the part map on disk claims it; it never claims unwritten bytes."""
        done, _ = partmap.load(self.partial, self.etag, self.entry.size)
        i = next((k for k, s in enumerate(done.starts) if s <= pos < done.ends[k]), None)
        return done.ends[i] if i is not None else pos

    def wait_for_bytes(self, pos: int, timeout: float, poll: float = 0.05) -> None:
        """Return once bytes at ``pos`` are written, the flight ended, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.state == "running" and self.written_until(pos) <= pos and time.monotonic() < deadline:
            self.wait(poll)


def glob_escape(path: str) -> str:
    """``path`` as an fnmatch pattern matching only itself."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def _blob_present(blob: Path, size: int) -> bool:
    try:
        return blob.stat().st_size == size
    except OSError:
        return False


class PullThroughBackend:
    """A store backend that fills itself from ``settings.sources`` on demand.

    ``ttl``: how long a branch's upstream commit is trusted (commits are
    immutable and kept longer). ``decide_network`` replaces the reachability
    probe for metadata; ``http`` and ``config`` go to the puller.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        hashes: HashCache | None = None,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        decide_network: Decider | None = None,
        http: HttpClient | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = Store(settings.hub_cache, settings.state_dir)
        self.local = StoreBackend(settings.hub_cache, state_dir=settings.state_dir, hashes=hashes, clock=clock)
        self._decide: Decider = decide_network or (lambda st: netsources.decide(st))
        self._http = http or HttpClient(settings.timeouts, settings.env)
        # Clients are streamed what the part map shows on disk: every file's
        # map is saved on each tick, small ones included.
        self._config = replace(config or engine_config(settings), every_map=True)
        self._branches = _TTLCache(ttl, clock)
        self._commits = _TTLCache(3600.0, clock)
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._manifests: dict[tuple[str, str, str], Manifest] = {}
        self._pending_refs: dict[tuple[RepoRef, str], str] = {}
        self._listed_by: dict[tuple[str, str, str], Source] = {}  # the source each listing came from
        # Flights running per (type, repo, commit), and the paths they pull.
        self._active: dict[tuple[str, str, str], int] = {}
        self._targets: dict[tuple[str, str, str], set[str]] = {}
        self.upstream_transfers = 0  # flights started; tests and diagnostics read it
        self._tainted: dict[str, float] = {}  # etag -> when a stream of it was cut off
        self._clock = clock

    # -- Backend --------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.local.root

    def repos(self) -> list[tuple[str, str]]:
        """What is on disk; the upstream catalogue is not listed."""
        return self.local.repos()

    def revisions(self, repo_type: str, repo_id: str) -> list[str]:
        return self.local.revisions(repo_type, repo_id)

    def snapshot(self, repo_type: str, repo_id: str, revision: str) -> Snapshot:
        ref = repo_ref(repo_type, repo_id)
        check_revision(revision)
        key = (repo_type, repo_id, revision)
        if not is_commit(revision):
            return self._branches.get_or_compute(key, lambda: self._load(ref, revision))
        # A commit never changes: the listing this process knows, else a complete
        # local snapshot (no network), else upstream.
        listing = self._manifests.get(key)
        if listing is not None:
            return self._commits.get_or_compute(key, lambda: self._build(ref, listing))
        return self._commits.get_or_compute(key, lambda: self._load_commit(ref, revision))

    def _load_commit(self, ref: RepoRef, commit: str) -> Snapshot:
        with self._lock:
            # While files are pulled the store lists a subset (see _save_listing).
            busy = bool(self._active.get((ref.repo_type, ref.repo_id, commit)))
        known = None if busy else self.store.load_manifest(ref, commit)
        # (an adopted commit no source confirmed may lack files: ask upstream)
        if known is not None and known.confirmed \
                and self.store.snapshot_dir(ref, commit).is_dir() and not self.store.missing_files(ref, commit):
            return self.local.snapshot(ref.repo_type, ref.repo_id, commit)
        return self._load(ref, commit)

    # -- metadata -------------------------------------------------------------------
    def _load(self, ref: RepoRef, revision: str) -> Snapshot:
        decision = self._decide(self.settings)
        if not decision.online:
            try:
                return self.local.snapshot(ref.repo_type, ref.repo_id, revision)
            except (RepoNotFoundError, RevisionNotFoundError):
                # Not "no such repository": the sources that would know cannot be asked.
                raise UpstreamError(OfflineError(f"no source reachable ({decision.reason})")) from None
        try:
            manifest, source = Puller(self.settings, http=self._http, config=self._config).fetch_manifest(
                ref.at(revision))
            check_tree(manifest.files)  # a listing naming a path as file and folder is never saved or served
        except (RepoNotFoundError, RevisionNotFoundError):
            return self.local.snapshot(ref.repo_type, ref.repo_id, revision)  # may hold what upstream lacks
        except (NetworkError, RemoteError, OfflineError) as exc:
            try:
                return self.local.snapshot(ref.repo_type, ref.repo_id, revision)
            except QwenhomeError:
                raise UpstreamError(exc) from None
        self._remember(ref, revision, manifest)
        with self._lock:
            self._listed_by[(ref.repo_type, ref.repo_id, manifest.commit)] = source
        return self._build(ref, manifest)

    def _remember(self, ref: RepoRef, revision: str, manifest: Manifest) -> None:
        """Keep the full listing (in the store too, so ``ls`` knows the snapshot is
        incomplete) and point a new branch at it."""
        key = (ref.repo_type, ref.repo_id, manifest.commit)
        with self._lock:
            self._manifests[key] = manifest
            if not self._active.get(key):
                self._save_listing(ref, manifest, None)
            if not is_commit(revision):
                self._pending_refs[(ref.at(None), revision)] = manifest.commit
                self._update_refs()

    def _save_listing(self, ref: RepoRef, manifest: Manifest, only: set[str] | None) -> None:
        """Save the listing merged with what the store lists; with ``only``, just
        the files present plus those paths. Under the lock.

        While files are being pulled the store lists only those: a pull with a
        listing of other missing files in the store would fetch them too."""
        known = self.store.load_manifest(ref, manifest.commit)
        listed = {f.path for f in manifest.files}
        files = [*manifest.files, *(f for f in (known.files if known else []) if f.path not in listed)]
        if only is not None:
            files = [f for f in files if f.path in only or self.store.has_blob(ref, f.etag, f.size)]
        with contextlib.suppress(QwenhomeError):
            self.store.save_manifest(Manifest(manifest.repo_id, manifest.repo_type, manifest.commit,
                                              files, manifest.source))

    def _update_refs(self) -> None:
        """Move a branch to its upstream commit when it has none yet, or once that
        snapshot is complete: an update never hides a complete snapshot. Under the lock."""
        for (ref, name), commit in list(self._pending_refs.items()):
            current = self.store.read_ref(ref, name)
            if current == commit:
                del self._pending_refs[(ref, name)]
            elif current is None or not self.store.missing_files(ref, commit):
                with contextlib.suppress(QwenhomeError):
                    self.store.write_ref(ref, name, commit)
                    del self._pending_refs[(ref, name)]

    def _build(self, ref: RepoRef, manifest: Manifest) -> Snapshot:
        files: dict[str, FileEntry] = {}
        for f in manifest.files:
            blob = self.store.blob_path(ref, f.etag)
            source = str(blob) if _blob_present(blob, f.size) else ""
            files[f.path] = _entry(f, source)
        return Snapshot.build(ref.repo_type, ref.repo_id, files, time.time(), commit=manifest.commit)

    # -- files ----------------------------------------------------------------------
    def present(self, snap: Snapshot, entry: FileEntry) -> str | None:
        """The real path of ``entry``'s blob when it is in the store now."""
        ref = RepoRef(snap.repo_id, snap.repo_type)
        blob = self.store.blob_path(ref, entry.etag)
        real = os.path.realpath(blob)
        if not inside(real, str(self.root)) or not _blob_present(Path(real), entry.size):
            return None
        return real

    def upstream_xet_hash(self, snap: Snapshot, entry: FileEntry) -> str | None:
        """The Xet hash the upstream gives ``entry``'s file: the HEAD of its
        ``resolve`` at the source that listed the snapshot (else the first Hub
        source). None when that source does not serve it through Xet, fails, or
        names another file (its sha256 or size)."""
        with self._lock:
            source = self._listed_by.get((snap.repo_type, snap.repo_id, snap.commit))
        source = source or next((s for s in self.settings.sources if s.kind == "hf"), None)
        if source is None or source.kind != "hf" or not entry.sha256:
            return None
        info = XetSession(source, self._http).head(RepoRef(snap.repo_id, snap.repo_type), snap.commit, entry.path)
        return info.file_hash if info is not None and info.names(entry.sha256, entry.size) else None

    def taint(self, etag: str) -> None:
        """A stream of ``etag`` was cut off after sending bytes (maybe unverified ones)."""
        with self._lock:
            self._tainted[etag] = self._clock()

    def tainted(self, etag: str, within: float = 3600.0) -> bool:
        """Whether a stream of ``etag`` was cut off in the last ``within`` seconds: a
        client resuming it may hold bytes that failed verification."""
        when = self._tainted.get(etag)
        return when is not None and self._clock() - when < within

    def fetch(self, snap: Snapshot, entry: FileEntry) -> Flight:
        """The running transfer of ``entry``'s blob, started if there is none."""
        ref = RepoRef(snap.repo_id, snap.repo_type)
        with self._lock:
            flight = self._flights.get(entry.etag)
            if flight is not None:
                return flight
            flight = Flight(ref, snap.commit, entry, self.store.partial_path(entry.etag),
                            self.store.blob_path(ref, entry.etag), self.root)
            self._flights[entry.etag] = flight
            self.upstream_transfers += 1
        threading.Thread(target=self._run, args=(flight,), name=f"qh-pull-through-{entry.etag[:12]}",
                         daemon=True).start()
        return flight

    def _run(self, flight: Flight) -> None:
        key = (flight.ref.repo_type, flight.ref.repo_id, flight.commit)
        with self._lock:
            listing = self._manifests.get(key) or self.store.load_manifest(flight.ref, flight.commit)
            self._active[key] = self._active.get(key, 0) + 1
            targets = self._targets.setdefault(key, set())
            targets.add(flight.entry.path)
            if listing is not None:
                self._save_listing(flight.ref, listing, targets)
        error: QwenhomeError | None = None
        try:
            pull(self.settings, flight.ref.at(flight.commit), include=[glob_escape(flight.entry.path)],
                 http=self._http, config=self._config)
        except QwenhomeError as exc:
            error = exc
        except Exception as exc:  # a client is waiting: it must learn the flight ended
            error = QwenhomeError(f"pull-through of {flight.entry.path} failed: {exc}", code="pull-through-failed")
        finally:
            with self._lock:
                self._flights.pop(flight.etag, None)
                self._active[key] -= 1
                targets.discard(flight.entry.path)
                if listing is not None:
                    self._save_listing(flight.ref, listing, targets if self._active[key] else None)
                if not self._active[key]:
                    del self._active[key], self._targets[key]
                    self._update_refs()
        # The blob is what counts: a pull also fails when other files of the
        # snapshot, pulled by other flights, are not there yet.
        if flight.blob_real() is not None:
            error = None
        elif error is None:
            error = RemoteError(f"{flight.entry.path}: not in the store after the pull", code="pull-through-failed")
        flight.end(error)


class UpstreamError(QwenhomeError):
    """The mirror's own sources failed and the store cannot answer instead."""

    code = "upstream-failed"

    def __init__(self, cause: QwenhomeError) -> None:
        # The cause's code and message only, never its context; and no credentials
        # a source URL may carry (https://user:secret@host) in what clients read.
        message = _USERINFO.sub(r"\1", cause.message)
        super().__init__(f"upstream: {cause.code}: {message}", code="upstream-failed")
        self.cause = cause
        self.transient = isinstance(cause, NetworkError | OfflineError) or cause.transient


def _entry(f: RepoFile, source: str) -> FileEntry:
    if f.sha256:
        blob_id = f.blob_id or git_blob_oid(lfs_pointer(f.sha256, f.size))
        return FileEntry(f.path, f.size, blob_id, f.sha256, source)
    return FileEntry(f.path, f.size, f.blob_id or "", None, source)


# -- streaming ------------------------------------------------------------------------
_KEY = secrets.token_bytes(32)


class _SentCheck:
    """Proves the bytes sent from the partial file equal the verified blob.

    A whole-file body is checked against the listed hash as it goes (one hash
    pass; the last byte is sent only if the hash then matches). A range is
    hashed with a per-process key and compared with the same span of the blob
    once that is verified (a source cannot forge a keyed digest)."""

    def __init__(self, entry: FileEntry, offset: int, length: int) -> None:
        self.offset = offset
        self.expected: str | None
        self.hasher: Any
        if offset == 0 and length == entry.size:
            self.expected = entry.sha256 or entry.blob_id
            self.hasher = hashlib.sha256() if entry.sha256 else hashlib.sha1(git_blob_header(entry.size))
        else:
            self.expected = None
            self.hasher = hashlib.blake2b(key=_KEY, digest_size=32)

    def update(self, data: memoryview) -> None:
        self.hasher.update(data)

    def span_matches(self, fd: int, end: int, mv: memoryview) -> bool:
        """Ranges: whether ``[offset, end)`` of the verified blob ``fd`` hashes the same."""
        if self.expected is not None:
            return True
        h = hashlib.blake2b(key=_KEY, digest_size=32)
        pos = self.offset
        while pos < end:
            n = os.preadv(fd, [mv[: min(len(mv), end - pos)]], pos)
            if n <= 0:
                return False
            h.update(mv[:n])
            pos += n
        return hmac.compare_digest(h.digest(), self.hasher.digest())

    def accepts_last(self, last: memoryview) -> bool:
        """Whole files: whether the listed hash accepts what was sent plus ``last``."""
        if self.expected is None:
            return True
        h = self.hasher.copy()
        h.update(last)
        return bool(h.hexdigest() == self.expected)


def stream(sock: socket.socket, flight: Flight, offset: int, length: int, *, poll: float = 0.05,
           stall_timeout: float = 600.0) -> int:
    """Send ``[offset, offset + length)`` of ``flight``'s file as it is written;
    returns the bytes sent. The last byte goes out only once the blob is
    verified in the store and everything sent matches it; otherwise raises
    :class:`BodyInterrupted` (the caller drops the connection)."""
    end = offset + length
    pos = offset
    sent = 0
    check = _SentCheck(flight.entry, offset, length)
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    part_fd = -1
    last_progress = time.monotonic()

    def send_from(fd: int, stop: int) -> None:
        nonlocal pos, sent
        while pos < stop:
            n = os.preadv(fd, [mv[: min(_CHUNK, stop - pos)]], pos)
            if n <= 0:
                raise BodyInterrupted(sent, "file shrank while streaming")
            check.update(mv[:n])
            try:
                sock.sendall(mv[:n])
            except OSError as exc:
                raise BodyInterrupted(sent, str(exc) or type(exc).__name__) from exc
            pos += n
            sent += n

    try:
        while True:
            if flight.state == "failed":
                raise BodyInterrupted(sent, "upstream transfer failed")
            if flight.state == "done" or flight.blob_real() is not None:
                return sent + _finish_from_blob(flight, check, pos, end, send_from, sock, mv, sent)
            stop = min(end - 1, flight.written_until(pos))  # the last byte waits for verification
            if stop > pos:
                if part_fd < 0:
                    try:
                        # The engine never links partials: a link there is planted.
                        part_fd = os.open(flight.partial, os.O_RDONLY | os.O_NOFOLLOW)
                    except FileNotFoundError:
                        flight.wait(poll)  # renamed into the store just now
                        continue
                send_from(part_fd, stop)
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > stall_timeout:
                raise BodyInterrupted(sent, "upstream transfer stalled")
            flight.wait(poll)
    except OSError as exc:
        if isinstance(exc, BodyInterrupted):
            raise
        raise BodyInterrupted(sent, f"cannot read the partial file: {exc.strerror or exc}") from exc
    finally:
        if part_fd >= 0:
            os.close(part_fd)


def _finish_from_blob(flight: Flight, check: _SentCheck, pos: int, end: int,
                      send_from: Callable[[int, int], None], sock: socket.socket, mv: memoryview,
                      sent: int) -> int:
    """Send the rest from the verified blob, proving first (ranges) or before the
    last byte (whole files) that the client got exactly the blob's bytes;
    returns the bytes sent here."""
    real = flight.blob_real()
    try:
        if real is None:
            raise FileNotFoundError(f"{flight.blob} is not a blob inside the store")
        fd = os.open(real, os.O_RDONLY)
    except OSError as exc:
        raise BodyInterrupted(sent, f"blob vanished: {exc.strerror or exc}") from exc
    try:
        if not check.span_matches(fd, pos, mv):
            raise BodyInterrupted(sent, "bytes sent differ from the verified file")
        send_from(fd, end - 1)
        last = mv[:1]
        if os.preadv(fd, [last], end - 1) != 1 or not check.accepts_last(last):
            raise BodyInterrupted(sent + (end - 1 - pos), "bytes sent differ from the verified file")
        try:
            sock.sendall(last)
        except OSError as exc:
            raise BodyInterrupted(sent + (end - 1 - pos), str(exc) or type(exc).__name__) from exc
        return end - pos
    finally:
        os.close(fd)
