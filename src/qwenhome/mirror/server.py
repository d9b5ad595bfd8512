"""A read-only Hub-protocol HTTP server over a :class:`~.backends.Backend`.

Threaded, HTTP/1.1 keep-alive, bodies sent with ``sendfile`` (zero-copy).
Serves what stock ``huggingface_hub`` 2.4 asks for: revision info, tree
listings, ``HEAD``/``GET`` on ``resolve`` with the Hub's headers and single
byte ranges, and the Hub's error codes (``X-Error-Code``).

Safety: every target is parsed by :func:`.protocol.parse_target` (paths
validated after decoding), files come only from the backend's listing, and the
real path of a file is checked to be inside the backend's root before it is
opened. With a token set, everything except signed ``/cdn/`` URLs needs
``Authorization: Bearer <token>``. Methods other than GET and HEAD get 405 (the
mirror is read-only); numbers in headers and queries are bounded, and any
failure still gets an answer (500) rather than a dropped connection.

Over a :class:`~.pullthrough.PullThroughBackend`, a listed file whose blob is
missing is streamed while one upstream transfer fills the store
(:meth:`_Handler._send_pulled`); a response completes only with verified bytes.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import socket
import struct
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlencode

from ..errors import EntryNotFoundError, QwenhomeError, RepoNotFoundError, RevisionNotFoundError
from .backends import Backend, inside
from .catalog import FileEntry, Snapshot
from .hooks import BodyInterrupted, BodySlice, BodyWriter, CannedResponse, Hooks, RequestInfo
from .protocol import (
    BAD_REQUEST,
    ENTRY_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REPO_NOT_FOUND,
    REVISION_NOT_FOUND,
    X_ERROR_CODE,
    X_ERROR_MESSAGE,
    X_LINKED_ETAG,
    X_LINKED_SIZE,
    X_REPO_COMMIT,
    BadQuery,
    BadTarget,
    Route,
    Unsatisfiable,
    count_param,
    parse_range,
    parse_target,
)
from .pullthrough import PullThroughBackend, UpstreamError, stream
from .responses import repo_info, repo_list, tree_entries

log = logging.getLogger(__name__)

_RESUME_RE = re.compile(r"^bytes=\s*[1-9]\d*-$")  # an open-ended range: a client resuming a download
_TEXT_SUFFIXES = (".json", ".txt", ".md", ".py", ".jinja", ".yaml", ".yml", ".gitattributes")
_API_PREFIX = {"model": "models", "dataset": "datasets"}


def sendfile_body(sock: socket.socket, body: BodySlice) -> int:
    """Send ``body`` with ``os.sendfile``.

    The socket is blocking for the body, so one system call moves it all with
    the GIL released (non-blocking, each socket buffer's worth would cost a
    wake-up and a GIL hand-off: slow first bytes for everyone at 32 clients).
    The connection's time-out becomes the kernel's send time-out meanwhile."""
    out_fd, in_fd = sock.fileno(), body.file.fileno()
    timeout = sock.gettimeout()
    offset, remaining, sent = body.offset, body.length, 0
    sock.settimeout(None)
    if timeout:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(timeout), int(timeout % 1 * 1e6)))
    try:
        while remaining > 0:
            try:
                n = os.sendfile(out_fd, in_fd, offset, min(remaining, 1 << 30))
            except BlockingIOError:
                raise BodyInterrupted(sent, "send timed out") from None
            except OSError as exc:
                raise BodyInterrupted(sent, str(exc)) from exc
            if n == 0:
                raise BodyInterrupted(sent, "file shrank while sending")
            offset += n
            remaining -= n
            sent += n
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return sent


def locate(backend: Backend, route: Route) -> tuple[Snapshot, FileEntry, str]:
    """The snapshot, entry and real path a resolve/cdn route refers to.

    Raises RepoNotFoundError / RevisionNotFoundError, or ``_EntryMissing``
    carrying the snapshot (the 404 names its commit in ``X-Repo-Commit``).
    """
    snap = backend.snapshot(route.repo_type, route.repo_id, route.revision)
    entry = snap.files.get(route.path)
    if entry is None or not entry.source:
        raise _EntryMissing(snap)
    real = os.path.realpath(entry.source)
    if not inside(real, str(backend.root)):
        raise _EntryMissing(snap)
    return snap, entry, real


def resolve_target(backend: Backend, target: str) -> Path:
    """The real file a ``resolve`` request target would serve; raises BadTarget or
    a RemoteError (repo/revision/entry not found) otherwise.

    This is exactly the server's own lookup, exposed for in-process tests.
    """
    route = parse_target(target)
    if route.kind != "resolve":
        raise BadTarget("not a resolve route")
    try:
        return Path(locate(backend, route)[2])
    except _EntryMissing:
        raise EntryNotFoundError(f"{route.path!r} not found", path=route.path) from None


class _EntryMissing(Exception):
    def __init__(self, snap: Snapshot) -> None:
        super().__init__("entry not found")
        self.snap = snap


def _content_type(path: str) -> str:
    return "text/plain; charset=utf-8" if path.lower().endswith(_TEXT_SUFFIXES) else "application/octet-stream"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], mirror: MirrorServer) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.mirror = mirror
        self.conn_ids = itertools.count(1)
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        self.errors = 0  # handler exceptions (peers vanishing mid-request, hook bugs)
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Count instead of printing a traceback: the library never prints."""
        self.errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qwenhome-mirror"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    # -- connection lifecycle ---------------------------------------------
    def setup(self) -> None:
        mirror = self.server.mirror
        super().setup()
        self.connection.settimeout(mirror.idle_timeout)  # idle keep-alive connections end
        self.conn_id = next(self.server.conn_ids)
        self.request_count = 0
        with self.server.active_lock:
            self.server.active.add(self.connection)
        if mirror.hooks is not None:
            mirror.hooks.on_connect(self.conn_id)

    def finish(self) -> None:
        with self.server.active_lock:
            self.server.active.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """The library prints nothing; observers use hooks."""

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _refuse_write(self) -> None:
        self._handle(head=False)  # answered 405 there, after the hooks and the token check

    # The mirror is read-only: methods that would change a repository get the
    # Hub's 405 with a JSON error, not http.server's bare 501 page.
    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write

    # -- dispatch ------------------------------------------------------------
    def _handle(self, *, head: bool) -> None:
        mirror = self.server.mirror
        self.request_count += 1
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # an unread request body would desync keep-alive
        auth = self.headers.get("Authorization")
        info = RequestInfo(
            method=self.command,
            target=self.path,
            path=self.path.partition("?")[0],
            headers=cast(Mapping[str, str], self.headers),
            connection_id=self.conn_id,
            request_no=self.request_count,
            client=self.client_address[0],
            range=self.headers.get("Range"),
            has_auth_header=auth is not None,
        )
        self._info = info
        self._status = 0
        self._sent = 0
        self._error: str | None = None
        route: Route | None = None
        try:
            route = parse_target(self.path)
            info.route_kind, info.file_path = route.kind, route.path
        except BadTarget:
            route = None
        info.authorized = mirror.token is None or (
            route is not None and route.kind == "cdn"
        ) or (auth is not None and hmac.compare_digest(auth.encode(), f"Bearer {mirror.token}".encode()))
        try:
            canned = mirror.hooks.on_request(info) if mirror.hooks is not None else None
            if canned is not None:
                self._send_canned(canned, head)
            elif not info.authorized:
                self._send_json(401, {"error": "Invalid credentials in Authorization header"}, head,
                                {"WWW-Authenticate": 'Bearer realm="qwenhome-mirror"'})
            elif self.command not in ("GET", "HEAD"):
                self.close_connection = True  # any body stays unread
                self._send_hub_error(405, METHOD_NOT_ALLOWED, f"{self.command} is not allowed: the mirror is read-only",
                                     head, {"Allow": "GET, HEAD"})
            elif route is None:
                self._send_json(400, {"error": "Invalid request path"}, head)
            else:
                self._dispatch(route, head)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close_connection = True
            self._error = self._error or type(exc).__name__
        except Exception as exc:  # a bug must not drop the connection without an answer
            log.debug("mirror: %s %s failed", self.command, self.path[:200], exc_info=True)
            self.close_connection = True
            self._error = self._error or type(exc).__name__
            if self._status:  # the status line went out already: all a client can see is the close
                raise
            self._send_json(500, {"error": "internal error in the mirror"}, head)
        finally:
            if mirror.hooks is not None:
                mirror.hooks.on_response(info, self._status, self._sent, self._error)

    def _dispatch(self, route: Route, head: bool) -> None:
        mirror = self.server.mirror
        try:
            if route.kind == "list":
                self._send_json(200, repo_list(
                    mirror.backend.repos(), route.repo_type, search=route.param("search"),
                    author=route.param("author"), limit=count_param(route, "limit"),
                ), head)
            elif route.kind == "info":
                snap = mirror.backend.snapshot(route.repo_type, route.repo_id, route.revision)
                self._send_json(200, repo_info(snap, blobs=route.flag("blobs")), head)
            elif route.kind == "tree":
                self._send_tree(route, head)
            elif route.kind == "cdn" and not mirror.check_signature(route):
                self._send_json(403, {"error": "Invalid or missing signature"}, head)
            else:
                try:
                    snap, entry, real = locate(mirror.backend, route)
                except _EntryMissing as missing:
                    pending = missing.snap.files.get(route.path)
                    if mirror.pull_through is None or route.kind != "resolve" or pending is None:
                        raise
                    self._send_pulled(mirror.pull_through, missing.snap, pending, head)
                    return
                if route.kind == "resolve" and mirror.redirect_lfs and entry.sha256:
                    self._send_redirect(snap, entry, head)
                else:
                    self._send_file(snap, entry, real, head)
        except BadQuery as exc:
            self._send_hub_error(400, BAD_REQUEST, str(exc), head)
        except RepoNotFoundError:
            self._send_hub_error(404, REPO_NOT_FOUND, "Repository not found", head)
        except RevisionNotFoundError:
            self._send_hub_error(404, REVISION_NOT_FOUND, "Invalid rev id: " + route.revision, head)
        except _EntryMissing as missing:
            self._send_hub_error(404, ENTRY_NOT_FOUND, "Entry not found", head,
                                 {X_REPO_COMMIT: missing.snap.commit})
        except UpstreamError as exc:  # the mirror's sources failed: the client may retry later
            if exc.transient:
                self._send_json(503, {"error": exc.message}, head, {"Retry-After": "5"})
            else:
                self._send_json(502, {"error": exc.message}, head)
        except QwenhomeError as exc:
            self._send_json(500, {"error": exc.message}, head)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except OSError as exc:  # unreadable file or folder: say so instead of dropping the connection
            if self._status:
                raise
            self._send_json(500, {"error": f"cannot read from the mirror's disk: {exc.strerror or exc}"}, head)

    # -- responses -------------------------------------------------------------
    def _start(self, status: int, headers: dict[str, str], length: int, close: bool = False) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if close:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, head: bool, headers: dict[str, str]) -> None:
        self._start(status, headers, len(body))
        if not head and body:
            self.wfile.write(body)
            self._sent = len(body)

    def _send_json(self, status: int, obj: Any, head: bool, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send_bytes(status, body, head, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def _send_hub_error(self, status: int, code: str, message: str, head: bool,
                        headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": message}, head,
                        {X_ERROR_CODE: code, X_ERROR_MESSAGE: message, **(headers or {})})

    def _send_canned(self, canned: CannedResponse, head: bool) -> None:
        headers = {"Content-Type": canned.content_type, **canned.headers}
        body = canned.body
        close = canned.close or canned.truncate_to is not None
        self._start(canned.status, headers, len(body), close=close)
        if head:
            return
        part = body if canned.truncate_to is None else body[: canned.truncate_to]
        if part:
            self.wfile.write(part)
            self._sent = len(part)
        if canned.truncate_to is not None:
            self._error = "truncated"

    def _send_tree(self, route: Route, head: bool) -> None:
        mirror = self.server.mirror
        snap = mirror.backend.snapshot(route.repo_type, route.repo_id, route.revision)
        entries = tree_entries(snap, route.path, recursive=route.flag("recursive"))
        if entries is None:
            raise _EntryMissing(snap)
        start = count_param(route, "cursor") or 0
        page = entries[start : start + mirror.tree_page_size]
        headers: dict[str, str] = {X_REPO_COMMIT: snap.commit}
        if start + mirror.tree_page_size < len(entries):
            query = {k: v[-1] for k, v in route.query.items() if k != "cursor"}
            query["cursor"] = str(start + mirror.tree_page_size)
            host = self.headers.get("Host") or f"{mirror.host}:{mirror.port}"
            next_url = f"http://{host}{self._info.path}?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(200, page, head, headers)

    def _file_headers(self, snap: Snapshot, entry: FileEntry) -> dict[str, str]:
        headers = {
            X_REPO_COMMIT: snap.commit,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": _content_type(entry.path),
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(entry.path.rsplit('/', 1)[-1])}",
        }
        if entry.sha256:
            headers[X_LINKED_ETAG] = f'"{entry.sha256}"'
            headers[X_LINKED_SIZE] = str(entry.size)
        return headers

    def _send_redirect(self, snap: Snapshot, entry: FileEntry, head: bool) -> None:
        mirror = self.server.mirror
        headers = self._file_headers(snap, entry)
        headers["ETag"] = f'"{entry.blob_id}"'  # the Hub's 302 carries the pointer's oid
        headers["Location"] = mirror.cdn_location(snap, entry)
        self._send_bytes(302, b"", head, headers)

    def _body_range(self, headers: dict[str, str], size: int, head: bool,
                    etag: str = "") -> tuple[int, int, int] | None:
        """``(status, offset, length)`` for this request's Range, or None once a 416 went out."""
        rng_header = self.headers.get("Range")
        pt = self.server.mirror.pull_through
        if rng_header and pt is not None and pt.tainted(etag) and _RESUME_RE.match(rng_header.strip()):
            # A resume after a pull-through stream was cut off for bytes that failed
            # verification: the client's prefix may hold them, so it gets the whole file.
            rng_header = None
        if_range = self.headers.get("If-Range")
        if rng_header and if_range is not None and if_range.strip() not in (
            headers["ETag"], f"W/{headers['ETag']}", headers.get("Last-Modified"),
        ):
            rng_header = None  # the client's copy is stale: send the whole file
        try:
            rng = parse_range(rng_header, size)
        except Unsatisfiable:
            message = f"Requested range not satisfiable: the file has {size} bytes"
            self._send_json(416, {"error": message}, head,
                            {**headers, "Content-Type": "application/json; charset=utf-8",
                             "Content-Range": f"bytes */{size}", X_ERROR_MESSAGE: message})
            return None
        if rng is None:
            return 200, 0, size
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
        return 206, rng[0], rng[1] - rng[0] + 1

    def _send_pulled(self, pt: PullThroughBackend, snap: Snapshot, entry: FileEntry, head: bool) -> None:
        """A listed file whose blob is missing: stream it while one upstream transfer runs."""
        real = pt.present(snap, entry)
        if real is not None:
            self._send_file(snap, entry, real, head)
            return
        headers = self._file_headers(snap, entry)
        span = self._body_range(headers, entry.size, head, entry.etag)
        if span is None:
            return
        status, offset, length = span
        if head and entry.size:  # metadata only: no transfer for a HEAD
            self._start(status, headers, length)
            return
        # (An empty file is fetched on HEAD too: clients create it without a GET.)
        flight = pt.fetch(snap, entry)
        # Wait a little for the first byte, so that an upstream failing at once gets a status.
        flight.wait_for_bytes(offset, timeout=self.server.mirror.first_byte_wait)
        if flight.state != "running":
            real = pt.present(snap, entry)
            if real is not None:
                self._send_file(snap, entry, real, head)
                return
            err = flight.error or QwenhomeError("upstream transfer failed", code="pull-through-failed")
            raise UpstreamError(err)
        self._start(status, headers, length)
        if length == 0 or head:
            return
        try:
            self._sent = stream(self.connection, flight, offset, length)
        except BodyInterrupted as exc:
            self._sent = exc.sent
            self._error = str(exc) or "interrupted"
            self.close_connection = True
            # The connection closes short of Content-Length: clients see an incomplete
            # body (huggingface_hub then resumes, and gets the whole file: see taint).
            if exc.sent:
                pt.taint(entry.etag)

    def _send_file(self, snap: Snapshot, entry: FileEntry, real: str, head: bool) -> None:
        mirror = self.server.mirror
        with open(real, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            if size != entry.size:  # changed on disk since it was listed
                self._send_json(503, {"error": "file changed on the mirror; retry"}, head, {"Retry-After": "1"})
                return
            headers = self._file_headers(snap, entry)
            headers["Last-Modified"] = email.utils.formatdate(st.st_mtime, usegmt=True)
            span = self._body_range(headers, size, head, entry.etag)
            if span is None:
                return
            status, offset, length = span
            self._start(status, headers, length)
            if head or length == 0:
                return
            body = BodySlice(fh, offset, length, size)
            writer: BodyWriter | None = None
            if mirror.hooks is not None:
                writer = mirror.hooks.body_writer(self._info, body)
            try:
                self._sent = (writer or sendfile_body)(self.connection, body)
            except BodyInterrupted as exc:
                self._sent = exc.sent
                self._error = str(exc) or "interrupted"
                self.close_connection = True
            except OSError as exc:
                self._error = type(exc).__name__
                self.close_connection = True
            if self._sent < length:
                self.close_connection = True


class MirrorServer:
    """A Hub-protocol server over ``backend``; ``port=0`` picks a free port.

    ``redirect_lfs`` answers ``resolve`` for LFS files with a ``302`` to
    ``http://{cdn_host}:{port}/cdn/...`` (a signed URL that needs no token), like
    the Hub's CDN, so clients can be checked for dropping their token across hosts.
    """

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        hooks: Hooks | None = None,
        *,
        redirect_lfs: bool = False,
        cdn_host: str = "localhost",
        tree_page_size: int = 1000,
        idle_timeout: float = 60.0,
        first_byte_wait: float = 5.0,
    ) -> None:
        self.backend = backend
        # A pull-through backend fills missing files from its sources while streaming them.
        self.pull_through = backend if isinstance(backend, PullThroughBackend) else None
        self.first_byte_wait = first_byte_wait
        self.token = token or None
        self.hooks = hooks
        self.redirect_lfs = redirect_lfs
        self.cdn_host = cdn_host
        self.tree_page_size = max(1, tree_page_size)
        self.idle_timeout = idle_timeout
        self._secret = secrets.token_bytes(32)
        self._httpd = _Server((host, port), self)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint clients use (``HF_ENDPOINT``)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    # -- signed CDN URLs ----------------------------------------------------------
    def _sign(self, repo_type: str, repo_id: str, commit: str, path: str) -> str:
        msg = f"{repo_type}\x00{repo_id}\x00{commit}\x00{path}".encode()
        return hmac.new(self._secret, msg, "sha256").hexdigest()[:32]

    def cdn_location(self, snap: Snapshot, entry: FileEntry) -> str:
        sig = self._sign(snap.repo_type, snap.repo_id, snap.commit, entry.path)
        org, name = snap.repo_id.split("/")
        return (f"http://{self.cdn_host}:{self.port}/cdn/{sig}/{_API_PREFIX[snap.repo_type]}/"
                f"{quote(org)}/{quote(name)}/{snap.commit}/{quote(entry.path)}")

    def check_signature(self, route: Route) -> bool:
        expected = self._sign(route.repo_type, route.repo_id, route.revision, route.path)
        return hmac.compare_digest(expected, route.signature)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> MirrorServer:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"qwenhome-mirror-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self._httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        """Stop accepting, drop open connections, release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._httpd.active_lock:
            conns = list(self._httpd.active)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
