"""The mirror as its own Xet CAS: what it answers on the Xet routes, from its records.

- ``resolve`` of an LFS file with a record carries ``X-Xet-Hash`` and a
  ``Link`` to the token route (``rel="xet-auth"``) and to the reconstruction
  (``rel="xet-reconstruction-info"``); listings carry ``xetHash``. A file
  without a record yet is queued for building and answered over plain HTTP;
  on a pull-through mirror, a file the store lacks is advertised with its
  upstream's Xet hash, and its reconstruction waits for it (:mod:`.pending`).
- ``GET /api/{models|datasets}/{repo}/xet-read-token/{rev}`` answers
  ``{accessToken, exp, casUrl}`` (and the ``X-Xet-*`` headers stock clients
  read), ``casUrl`` being the mirror's own CAS.
- ``GET {casUrl}/v2/reconstructions/{file_id}`` (and ``/v1/``), with an
  optional ``Range`` of the file: terms, and per xorb signed URLs with their
  byte ranges. ``HEAD {casUrl}/v1/files/{id}`` and ``/v1/xorbs/default/{h}``
  answer whether a file or xorb exists.
- ``GET /xorb/default/{hash}?X-Xet-Signed-Range=..&Expires=..&Signature=..``
  with a ``Range`` inside the signed ranges: the xorb bytes, one range as
  206, several as ``multipart/byteranges``.

The CAS and the xorb bytes may be served on ports of their own
(:class:`XetOptions`), as the Hub serves them from other hosts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import QwenhomeError
from ...store.recipes import Recipes
from ...xet import Policy, RangeNotSatisfiable, XorbInfo, reconstruction_v1, reconstruction_v2
from ...xet.reconstruction import ByteRange
from ...xet.token import HEADER_XET_HASH, LINK_REL_AUTH, LINK_REL_RECONSTRUCTION, XetToken
from ..backends import Backend, StoreBackend
from ..catalog import FileEntry, Snapshot
from ..hooks import BodySlice
from ..protocol import Route
from ..pullthrough import PullThroughBackend
from .auth import Refused, Signer
from .body import xorb_body
from .building import Builder, Job
from .pending import Pending, Refusal
from .records import Records

log = logging.getLogger(__name__)

_API_PREFIX = {"model": "models", "dataset": "datasets"}
_FILE_RANGE = re.compile(r"^bytes=(\d{1,18})-(\d{0,18})$")


@dataclass(frozen=True)
class XetOptions:
    """How the mirror serves Xet. The defaults serve everything on the mirror's own port."""

    folder: Path | None = None  # where the records live; None: a temporary folder, removed at stop
    cas_port: int | None = None  # reconstructions on a port of their own (0: any free one)
    xorb_port: int | None = None  # xorb bytes on a port of their own (0: any free one); None: with the CAS
    cas_host: str | None = None  # host name in casUrl; None: the name the client used
    xorb_host: str | None = None  # host name in xorb URLs; None: the name the client used
    token_ttl: float = 3600.0  # lifetime of an access token, seconds
    url_ttl: float = 3600.0  # lifetime of a signed xorb URL, seconds
    build_at_start: bool = True  # queue every blob at start (else only those clients ask for)
    # "none": xorbs made from the blobs as served (no copy); "lz4"/"auto": xorbs stored compressed
    # (LZ4, or the smaller of LZ4 and BG4-LZ4, per chunk where it is smaller), as the Hub's are.
    compression: str = "none"
    # Pull-through: how long a reconstruction of a file still coming from upstream is held
    # before a 503 with Retry-After (the transfer goes on).
    pull_wait: float = 60.0


@dataclass
class Answer:
    """A response for the handler to send. ``body`` bytes, or ``stream`` (whose file the handler closes)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: BodySlice | None = None
    length: int | None = None  # Content-Length when it is not the body's (a HEAD)

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
        return cls.json(status, {"error": message}, headers)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
                   json.dumps(obj, separators=(",", ":")).encode())


class _Infos(Mapping[str, XorbInfo]):
    """The xorbs' layouts, read from the records as the reconstruction needs them (by key only:
    it cannot be iterated, the records are not all in memory)."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def __getitem__(self, key: str) -> XorbInfo:
        layout = self._records.xorb(key)
        if layout is None:
            raise KeyError(key)
        return layout.info

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class XetService:
    def __init__(self, backend: Backend, options: XetOptions, *, clock: Callable[[], float] | None = None) -> None:
        self.backend = backend
        self.options = options
        self._tmp = None if options.folder is not None else tempfile.mkdtemp(prefix="qwenhome-xet-")
        self.folder = options.folder or Path(self._tmp or "")
        self.records = Records(self.folder)
        self.records.load()
        store = backend.store if isinstance(backend, PullThroughBackend | StoreBackend) else None
        recipes = Recipes(store).load if store is not None else None
        self.builder = Builder(self.records, policy=Policy(options.compression), recipes=recipes)
        self.signer = Signer(clock=clock or time.time)
        self._infos = _Infos(self.records)
        self._scanned = threading.Event()
        self._present = backend.present if isinstance(backend, PullThroughBackend) else None
        self.pending = Pending(backend, self.records, self.builder, lambda snap, entry: self._want(
            snap, entry, urgent=True), wait=options.pull_wait) if isinstance(backend, PullThroughBackend) else None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.builder.start()
        if self.options.build_at_start:
            threading.Thread(target=self.scan, name="qwenhome-mirror-xet-scan", daemon=True).start()

    def stop(self) -> None:
        self.builder.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def scan(self) -> int:
        """Drop the records of blobs that changed or went away (``qwenhome gc``, ``rm``); queue every
        LFS blob of every repository, oldest revision first; returns how many were queued."""
        for header in self.records.headers():
            self.records.usable(header.sha256)
        queued = 0
        for repo_type, repo_id in self.backend.repos():
            try:
                for rev in self.backend.revisions(repo_type, repo_id):
                    snap = self.backend.snapshot(repo_type, repo_id, rev)
                    for entry in snap.files.values():
                        queued += self._want(snap, entry, urgent=False)
            except (QwenhomeError, OSError) as exc:
                log.debug("xet: %s not scanned: %s", repo_id, exc)
        log.info("xet: %d blobs queued for chunking, %d already done", queued, len(self.records))
        self._scanned.set()
        return queued

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the start-up scan is done and every queued blob is built; False on time-out."""
        deadline = time.monotonic() + timeout
        if self.options.build_at_start and not self._scanned.wait(timeout):
            return False
        return self.builder.wait_idle(max(0.0, deadline - time.monotonic()))

    def _want(self, snap: Snapshot, entry: FileEntry, *, urgent: bool) -> int:
        # A pull-through mirror lists files before their blobs arrive: ask where the blob is now.
        path = entry.source or (self._present(snap, entry) if self._present is not None else None)
        if not entry.sha256 or not entry.size or not path:
            return 0
        self.builder.want(Job(entry.sha256, path, entry.size, f"{snap.repo_type}/{snap.repo_id}"), urgent)
        return 1

    # -- the Hub's side: resolve and listings ------------------------------------------------
    def file_id(self, snap: Snapshot, entry: FileEntry, *, urgent: bool = True, ask: bool = False) -> str | None:
        """The file's Xet hash when it can be served through Xet now; else it is queued and None.

        On a pull-through mirror, a file whose blob is not in the store yet gets
        the upstream's Xet hash (asked of the upstream with ``ask``)."""
        if not entry.sha256 or not entry.size:
            return None
        header = self.records.usable(entry.sha256)
        if header is not None:
            return header.file_hash
        queued = self._want(snap, entry, urgent=urgent)
        return self.pending.file_id(snap, entry, ask=ask and not queued) if self.pending is not None else None

    def resolve_headers(self, snap: Snapshot, entry: FileEntry, hub_base: str, cas_base: str) -> dict[str, str]:
        file_id = self.file_id(snap, entry, ask=True)
        if file_id is None:
            return {}
        org, name = snap.repo_id.split("/")
        token_url = f"{hub_base}/api/{_API_PREFIX[snap.repo_type]}/{org}/{name}/xet-read-token/{snap.commit}"
        return {HEADER_XET_HASH: file_id,
                "Link": f'<{token_url}>; rel="{LINK_REL_AUTH}", '
                        f'<{cas_base}/v1/reconstructions/{file_id}>; rel="{LINK_REL_RECONSTRUCTION}"'}

    def add_xet_hashes(self, snap: Snapshot, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Listing entries with ``xetHash`` for the LFS files that have a record (others are queued)."""
        out = []
        for e in entries:
            f = snap.files.get(e.get("path", "")) if "lfs" in e else None
            file_id = self.file_id(snap, f, urgent=False) if f is not None else None
            out.append({**e, "xetHash": file_id} if file_id is not None else e)
        return out

    def token(self, route: Route, cas_base: str) -> Answer:
        """The token route; the repository and revision must exist (else the caller's 404s)."""
        if route.kind == "xet-write-token":
            return Answer.error(403, "the mirror is read-only: no Xet write tokens")
        snap = self.backend.snapshot(route.repo_type, route.repo_id, route.revision)
        access, exp = self.signer.issue(snap.repo_type, snap.repo_id, route.revision, self.options.token_ttl)
        token = XetToken(access, exp, cas_base)
        return Answer.json(200, token.to_json(), token.headers())

    # -- the CAS -----------------------------------------------------------------------------
    def _scoped_sha(self, route: Route, authorization: str | None) -> tuple[str, Snapshot]:
        """The sha256 of the file ``route.key`` names, if the token may read it, and the
        token's snapshot; raises Refused. (On a pull-through mirror the file may be
        one it advertised and does not hold yet.)"""
        scope = self.signer.check(authorization)
        sha = self.records.sha_of_file_hash(route.key)
        if (sha is None or self.records.usable(sha) is None) and self.pending is not None:
            sha = self.pending.sha_of(route.key)
        if sha is None or (self.pending is None and self.records.usable(sha) is None):
            raise Refused(404, "file not found")
        try:
            snap = self.backend.snapshot(scope.repo_type, scope.repo_id, scope.revision)
        except QwenhomeError:
            raise Refused(403, "the token's repository or revision is gone") from None
        shas: set[str] | None = snap.memo.get("xet-sha256")
        if shas is None:
            shas = {f.sha256 for f in snap.files.values() if f.sha256}
            snap.memo["xet-sha256"] = shas
        if sha not in shas:
            raise Refused(403, "the file is not in the token's repository and revision")
        return sha, snap

    def reconstruction(self, route: Route, authorization: str | None, range_header: str | None,
                       xorb_base: str) -> Answer:
        try:
            sha, snap = self._scoped_sha(route, authorization)
            header = self.records.usable(sha)
            if self.pending is not None and (header is None or header.file_hash != route.key):
                self.pending.fill(snap, sha, route.key)
        except Refused as exc:
            return Answer.error(exc.status, exc.message)
        except Refusal as exc:
            return Answer.error(exc.status, exc.message, exc.headers)
        body = self.records.body(sha)
        if body is None:
            return Answer.error(404, "file not found")
        file_range = None
        if range_header:
            m = _FILE_RANGE.match(range_header.strip())
            if m is None:
                return Answer.error(400, "Range must be bytes=start-end")
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else body.recipe.size - 1
            if end < start:
                return Answer.error(400, "Range ends before it starts")
            file_range = (start, end)

        def url_for(xorb: str, ranges: Sequence[ByteRange]) -> str:
            return f"{xorb_base}/xorb/default/{xorb}?{self.signer.sign(xorb, ranges, self.options.url_ttl)}"

        build = reconstruction_v1 if route.version == 1 else reconstruction_v2
        try:
            answer = build(body.recipe, self._infos, url_for, file_range)
        except RangeNotSatisfiable:
            return Answer.error(416, f"the file has {body.recipe.size} bytes",
                                {"Content-Range": f"bytes */{body.recipe.size}"})
        except KeyError:  # a xorb's record went away meanwhile
            return Answer.error(503, "the file's records are being rebuilt; retry", {"Retry-After": "1"})
        return Answer(200, {"Content-Type": "application/json"}, answer.dumps())

    def exists(self, route: Route, authorization: str | None) -> Answer:
        """``HEAD /v1/files/{id}`` and ``HEAD /v1/xorbs/default/{hash}``: 200 with the size, or 404."""
        try:
            self.signer.check(authorization)
        except Refused as exc:
            return Answer.error(exc.status, exc.message)
        if route.kind == "cas-file":
            sha = self.records.sha_of_file_hash(route.key)
            header = self.records.usable(sha) if sha is not None else None
            size = header.size if header is not None else None
        else:
            layout = self.records.xorb(route.key)
            size = layout.info.size if layout is not None else None
        if size is None:
            return Answer.error(404, "not found")
        return Answer(200, {"Content-Type": "application/octet-stream"}, length=size)

    def xorb(self, route: Route, range_header: str | None) -> Answer:
        try:
            ranges = self.signer.authorize(route.key, route.query, range_header)
        except Refused as exc:
            return Answer.error(exc.status, exc.message)
        layout = self.records.xorb(route.key)
        if layout is None:
            return Answer.error(404, "xorb not found")
        size = layout.info.size
        if any(b >= size for _, b in ranges):
            return Answer.error(416, f"the xorb has {size} bytes", {"Content-Range": f"bytes */{size}"})
        try:
            blob = open(layout.source.path, "rb", buffering=0)  # noqa: SIM115 (the handler closes it)
        except OSError:
            return Answer.error(404, "xorb not found")
        if not layout.source.matches(os.fstat(blob.fileno())):
            blob.close()
            return Answer.error(404, "xorb not found (its blob changed)")
        stream, ctype = xorb_body(blob, layout, ranges)
        headers = {"Content-Type": ctype, "Accept-Ranges": "bytes"}
        if len(ranges) == 1:
            headers["Content-Range"] = f"bytes {ranges[0][0]}-{ranges[0][1]}/{size}"
        return Answer(206, headers, stream=stream)
