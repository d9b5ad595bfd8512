"""Xet for the files a pull-through mirror does not hold yet.

A stock Xet client chooses Xet at a file's ``resolve`` HEAD. For an LFS file
whose blob the store lacks, the mirror advertises the Xet hash its upstream
gives the file (asked once per blob: the hash depends only on the bytes, so it
is the one the mirror computes once it holds them). The client's
reconstruction of that hash starts the upstream transfer (the pull-through's
flight: a pull of that one file, through Xet where the upstream offers it),
waits until the blob is verified in the store and its record is built, and is
then answered from the record like any other. Past ``wait`` seconds the
client gets 503 with ``Retry-After`` while the transfer goes on.

A hash the upstream gave is served only once the bytes confirm it: the
record's hash is computed from the verified blob, and a mismatch is a 502.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..catalog import FileEntry, Snapshot
from ..pullthrough import PullThroughBackend, UpstreamError
from .building import Builder
from .records import Records

log = logging.getLogger(__name__)

_UNKNOWN_TTL = 60.0  # seconds an upstream that gave a file no Xet hash is not asked again
_RETRY_AFTER = "5"


class Refusal(Exception):
    """A reconstruction that cannot be answered from a record (yet): ``status``, why, headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Pending:
    """The upstream's Xet hashes of files the store lacks, and the wait for their records."""

    def __init__(self, backend: PullThroughBackend, records: Records, builder: Builder,
                 want: Callable[[Snapshot, FileEntry], int], *, wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.records = records
        self.builder = builder
        self._want = want  # queue a present blob for building, urgently
        self.wait = wait
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}  # sha256 -> the upstream's Xet hash of that blob
        self._shas: dict[str, str] = {}  # Xet hash -> sha256
        self._unknown: dict[str, float] = {}  # sha256 -> when the upstream gave it no Xet hash

    def file_id(self, snap: Snapshot, entry: FileEntry, *, ask: bool) -> str | None:
        """The Xet hash to advertise for ``entry`` (an LFS file without a record):
        one learnt already, else (with ``ask``) the upstream's, asked now."""
        sha = entry.sha256
        if not sha:
            return None
        with self._lock:
            known, unknown_at = self._ids.get(sha), self._unknown.get(sha)
        if known is not None or not ask or (unknown_at is not None and self._clock() - unknown_at < _UNKNOWN_TTL):
            return known
        file_id = self.backend.upstream_xet_hash(snap, entry)
        with self._lock:
            if file_id is None:
                self._unknown[sha] = self._clock()
            else:
                self._ids[sha] = file_id
                self._shas[file_id] = sha
                self._unknown.pop(sha, None)
        return file_id

    def sha_of(self, file_id: str) -> str | None:
        """The blob whose upstream Xet hash is ``file_id``, if one was advertised."""
        with self._lock:
            return self._shas.get(file_id)

    def fill(self, snap: Snapshot, sha256: str, file_id: str) -> None:
        """Return once the blob ``sha256`` of ``snap`` is in the store, verified,
        with a record whose file hash is ``file_id``; raises :class:`Refusal`."""
        entry = next((f for f in snap.files.values() if f.sha256 == sha256), None)
        if entry is None:
            raise Refusal(404, "file not found")
        deadline = self._clock() + self.wait
        if self.backend.present(snap, entry) is None:
            flight = self.backend.fetch(snap, entry)
            while flight.state == "running":
                left = deadline - self._clock()
                if left <= 0:
                    raise Refusal(503, "the mirror is fetching the file from its upstream; retry",
                                  {"Retry-After": _RETRY_AFTER})
                flight.wait(min(left, 1.0))
            if self.backend.present(snap, entry) is None:
                cause = UpstreamError(flight.error) if flight.error is not None else None
                raise Refusal(502, cause.message if cause is not None else "upstream transfer failed")
        self._want(snap, entry)
        if not self.builder.wait_for(sha256, max(0.0, deadline - self._clock())):
            raise Refusal(503, "the mirror is hashing the file; retry", {"Retry-After": _RETRY_AFTER})
        header = self.records.usable(sha256)
        if header is None:
            raise Refusal(502, "the mirror could not hash the file; it is served over plain HTTP")
        if header.file_hash != file_id:
            log.warning("xet: the upstream gave blob %s the Xet hash %s; its bytes hash to %s",
                        sha256[:16], file_id[:16], header.file_hash[:16])
            raise Refusal(502, "the upstream's Xet hash of the file does not match its bytes")
